"""States kept as deltas from a base: each family's chain rebuilds every state exactly."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from rngvault import _delta
from rngvault._codec import encode_states
from rngvault._snapshot import State
from rngvault.families import family_of

torch = pytest.importorskip("torch", reason="torch is not installed")


def _entry(obj: Any) -> tuple[bytes, State]:
    """A generator's state entry as stores key it (its canonical encoding), and its State."""
    family = family_of(obj)
    state = State(family.name, family.capture(obj))
    whole = encode_states({"g": state})
    unpacker = msgpack.Unpacker()
    unpacker.feed(whole)
    unpacker.read_map_header()
    unpacker.skip()
    return whole[unpacker.tell() :], state


CASES: list[tuple[str, Callable[[], Any], Callable[[Any], Any]]] = [
    (
        "torch.cpu",
        lambda: torch.Generator().manual_seed(3),
        lambda g: torch.rand(5000, generator=g),
    ),
    ("python", lambda: random.Random(4), lambda g: [g.random() for _ in range(900)]),
    ("numpy.legacy", lambda: np.random.RandomState(5), lambda g: g.standard_normal(801)),
    (
        "numpy.bitgen MT19937",
        lambda: np.random.Generator(np.random.MT19937(7)),
        lambda g: g.random(700),
    ),
    ("numpy.bitgen PCG64", lambda: np.random.default_rng(6), lambda g: g.random(30)),
]


@pytest.mark.parametrize(("label", "make", "draw"), CASES, ids=[c[0] for c in CASES])
def test_every_state_of_a_chain_rebuilds_exactly_and_small(
    label: str, make: Callable[[], Any], draw: Callable[[Any], Any]
) -> None:
    generator = make()
    base, state = _entry(generator)
    chain = _delta.Chain(base, state.family, state.fields)
    for _ in range(12):
        draw(generator)
        blob, state = _entry(generator)
        encoded = chain.encode(blob, state.family, state.fields)
        assert encoded is not None
        how, form, data = encoded
        assert len(data) < 64 < len(blob) or len(blob) < 200
        assert _delta.rebuild(base, how, form, data) == blob
    if "MT19937" in label or label in ("torch.cpu", "python", "numpy.legacy"):
        assert how is not None and how[3] > 0  # the key was advanced, not copied


def test_an_irregular_step_is_found_by_search_and_a_reseed_starts_a_new_base() -> None:
    generator = torch.Generator().manual_seed(1)
    base, state = _entry(generator)
    chain = _delta.Chain(base, "torch.cpu", state.fields)
    for count in (4000, 4000, 9000, 10):  # the guess (4000) misses twice
        torch.rand(count, generator=generator)
        blob, state = _entry(generator)
        encoded = chain.encode(blob, "torch.cpu", state.fields)
        assert encoded is not None and _delta.rebuild(base, *encoded) == blob
    generator.manual_seed(2)
    blob, state = _entry(generator)
    assert chain.encode(blob, "torch.cpu", state.fields) is None  # not ahead: keep it whole


def test_a_state_too_far_ahead_of_its_base_is_kept_whole() -> None:
    generator = np.random.RandomState(1)
    base, state = _entry(generator)
    chain = _delta.Chain(base, state.family, state.fields, max_distance=10_000)
    for _ in range(2):  # 4,000 outputs (two per double) each: 8,000 from the base
        generator.random_sample(2000)
        blob, state = _entry(generator)
        assert chain.encode(blob, state.family, state.fields) is not None
    generator.random_sample(2000)  # 12,000 from the base
    blob, state = _entry(generator)
    assert chain.encode(blob, state.family, state.fields) is None


@pytest.mark.parametrize(
    "how",
    [
        ["u32", 0, 624, -1],
        ["u32", 0, 624, 1 << 40],
        ["u32", 0, 625, 10],
        ["u64", 10**9, 624, 10],
        ["rot13", 0, 624, 10],
        ["u32", "0", 624, 10],
    ],
)
def test_a_delta_whose_how_does_not_fit_is_a_value_error(how: list[Any]) -> None:
    base, _state = _entry(np.random.RandomState(1))
    with pytest.raises(ValueError):
        _delta.dictionary(base, how)


def test_patches_and_streams_that_do_not_fit_are_value_errors() -> None:
    base = bytes(range(200))
    changed = bytearray(base)
    changed[10:13] = b"xyz"
    changed[150] = 0
    patch = _delta.patch(bytes(changed), base)
    assert patch is not None and _delta.apply_patch(patch, base) == bytes(changed)
    assert _delta.patch(base + b"!", base) is None  # other lengths: no patch
    for bad in (msgpack.packb([[190, b"0123456789012"]]), msgpack.packb({"a": 1}), b"\xc1"):
        with pytest.raises(ValueError):
            _delta.apply_patch(bad, base)
    stream = _delta.compress(b"a" * 5000, base)
    assert _delta.decompress(stream, base) == b"a" * 5000
    with pytest.raises(ValueError):
        _delta.decompress(stream, base, limit=100)  # more than allowed
    with pytest.raises(ValueError):
        _delta.decompress(stream[:-3], base)  # cut short
    with pytest.raises(ValueError):
        _delta.rebuild(base, None, "q", b"")


def test_a_splice_keeps_the_shared_ends_whatever_the_lengths() -> None:
    base = b"head-" + bytes(range(100)) + b"-tail"
    for data in (
        base,
        base.replace(b"\x10\x11", b"\x10\x99\x98\x11"),
        base[:50] + base[60:],
        b"",
        base + b"more",
    ):
        splice = _delta.splice(data, base)
        assert _delta.apply_splice(splice, base) == data
        assert _delta.rebuild(base, None, "s", splice) == data
    assert len(_delta.splice(base[:50] + b"x" + base[50:], base)) < 12
    for bad in (msgpack.packb([5, 200, b""]), msgpack.packb([-1, 0, b""]), msgpack.packb([1])):
        with pytest.raises(ValueError):
            _delta.apply_splice(bad, base)


def test_reading_deltas_in_any_order_rebuilds_each_exactly() -> None:
    """Rebuilding resumes from the furthest position reached from a base; a delta before
    it is rebuilt from the base again."""
    generator = torch.Generator().manual_seed(9)
    base, state = _entry(generator)
    chain = _delta.Chain(base, "torch.cpu", state.fields)
    deltas, blobs = [], []
    for _ in range(6):
        torch.rand(7000, generator=generator)
        blob, state = _entry(generator)
        encoded = chain.encode(blob, "torch.cpu", state.fields)
        assert encoded is not None
        deltas.append(encoded)
        blobs.append(blob)
    for i in (0, 1, 2, 5, 3, 4, 0, 5):
        assert _delta.rebuild(base, *deltas[i]) == blobs[i]


def test_two_forms_of_one_stream_position_are_not_taken_for_each_other() -> None:
    """Index 624 of a key and index 0 of that key twisted give the same outputs, but a
    reader advancing the base rebuilds only the first: the second is kept whole."""
    generator = random.Random(1)
    base, state = _entry(generator)
    chain = _delta.Chain(base, "python", state.fields)
    for _ in range(624):
        generator.getrandbits(32)
    blob, state = _entry(generator)  # index 624
    encoded = chain.encode(blob, "python", state.fields)
    assert encoded is not None and _delta.rebuild(base, *encoded) == blob
    twisted = np.random.MT19937(0)
    key = np.array(state.fields["key"], dtype=np.uint32)
    twisted.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}
    twisted.random_raw(1)
    generator.setstate((3, (*(int(k) for k in twisted.state["state"]["key"]), 0), None))
    blob, state = _entry(generator)  # index 0 of the twisted key: the same position
    encoded = chain.encode(blob, "python", state.fields)
    assert encoded is None or _delta.rebuild(base, *encoded) == blob
