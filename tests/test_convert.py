"""Tests for rngvault/convert.py: MT19937 states moved between libraries keep their raw stream."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rngvault import State, StateError
from rngvault.convert import (
    apply,
    mt_words,
    to_numpy_legacy,
    to_numpy_mt19937,
    to_python,
    to_torch_cpu,
)

torch = pytest.importorskip("torch", reason="torch is not installed")

WORDS = 2000  # more than three blocks of 624: every stream crosses twists


def python_words(generator: random.Random, n: int) -> list[int]:
    return [generator.getrandbits(32) for _ in range(n)]


def legacy_words(generator: np.random.RandomState, n: int) -> list[int]:
    return generator.randint(0, 2**32, size=n, dtype=np.uint32).tolist()


def mt19937_words(generator: np.random.MT19937, n: int) -> list[int]:
    return generator.random_raw(n).tolist()


def torch_words(generator: torch.Generator, n: int) -> list[int]:
    """torch's raw 32-bit outputs: a full-range int64 draw is (first word << 32) | second."""
    values = torch.empty(n // 2, dtype=torch.int64).random_(-(2**63), None, generator=generator)
    words = []
    for value in values.tolist():
        value &= 2**64 - 1
        words += [value >> 32, value & 0xFFFFFFFF]
    return words


# name -> (fresh target, raw word draw, converter)
LIBRARIES: dict[str, tuple[Callable[[], Any], Callable[[Any, int], list[int]], Any]] = {
    "python": (lambda: random.Random(0), python_words, to_python),
    "numpy.legacy": (lambda: np.random.RandomState(0), legacy_words, to_numpy_legacy),
    "numpy.MT19937": (lambda: np.random.MT19937(0), mt19937_words, to_numpy_mt19937),
    "torch.cpu": (lambda: torch.Generator().manual_seed(0), torch_words, to_torch_cpu),
}


def source(name: str, seed: int, drawn: int) -> Any:
    """A generator of library ``name``, seeded with ``seed``, after ``drawn`` raw words."""
    if name == "torch.cpu":
        generator: Any = torch.Generator().manual_seed(seed)
    else:
        generator = {
            "python": random.Random,
            "numpy.legacy": np.random.RandomState,
            "numpy.MT19937": np.random.MT19937,
        }[name](seed)
    LIBRARIES[name][1](generator, drawn)
    return generator


@pytest.mark.parametrize("drawn", [0, 2, 300, 624, 1000])
@pytest.mark.parametrize("target", list(LIBRARIES))
@pytest.mark.parametrize("origin", list(LIBRARIES))
def test_raw_streams_match_after_conversion(origin: str, target: str, drawn: int) -> None:
    """Converting an MT19937 state to another library gives the same raw 32-bit stream,
    at the start of a block, inside one, and after whole blocks."""
    generator = source(origin, seed=1234, drawn=drawn)
    make, draw_target, convert = LIBRARIES[target]
    converted = make()
    apply(convert(generator), converted)
    assert draw_target(converted, WORDS) == LIBRARIES[origin][1](generator, WORDS)


def test_torch_round_trip_through_python_keeps_the_stream() -> None:
    """torch -> python -> torch gives a generator with the original stream and seed field."""
    generator = torch.Generator().manual_seed(77)
    torch_words(generator, 100)
    back = torch.Generator()
    apply(to_torch_cpu(to_python(generator), seed=77), back)
    assert back.initial_seed() == 77
    assert torch_words(back, WORDS) == torch_words(generator, WORDS)


def test_same_family_is_returned_as_is() -> None:
    """A state already in the target family comes back unchanged (cached normals kept)."""
    generator = random.Random(1)
    generator.gauss()
    state = to_python(generator)
    assert state.fields["gauss_next"] is not None
    assert to_python(state) is state


def test_cached_normals_are_dropped() -> None:
    """Cached normals do not cross libraries: the converted state has none."""
    generator = random.Random(1)
    generator.gauss()
    assert to_numpy_legacy(generator).fields["has_gauss"] == 0
    rs = np.random.RandomState(1)
    rs.standard_normal()
    assert to_python(rs).fields["gauss_next"] is None


def test_non_mt_bit_generator_is_refused() -> None:
    """A PCG64 state has no MT19937 equivalent: StateError naming the bit generator."""
    with pytest.raises(StateError, match="PCG64") as error:
        to_python(np.random.PCG64(1))
    assert error.value.field == "bit_generator"


def test_index_zero_has_no_torch_equivalent() -> None:
    """Index 0 would need 624 unread words, one more than torch keeps: refused, named."""
    state = State("python", {"key": tuple(range(1, 625)), "index": 0, "gauss_next": None})
    with pytest.raises(StateError, match="index 0") as error:
        to_torch_cpu(state)
    assert error.value.field == "index"


def test_inconsistent_torch_state_is_refused() -> None:
    """A torch state whose next disagrees with left has no MT index: refused, naming next."""
    generator = torch.Generator().manual_seed(1)
    torch_words(generator, 10)
    raw = bytearray(generator.get_state().numpy().tobytes())
    struct.pack_into("<Q", raw, 16, 3)
    with pytest.raises(StateError, match="next is 3") as error:
        to_python(State("torch.cpu", {"state": bytes(raw)}))
    assert error.value.field == "state.next"


def test_invalid_source_state_is_refused_before_converting() -> None:
    """An invalid state (pos 700) is refused with the family's own StateError."""
    state = State(
        "numpy.legacy", {"key": np.ones(624, np.uint32), "pos": 700, "has_gauss": 0, "gauss": 0.0}
    )
    with pytest.raises(StateError, match="700"):
        to_python(state)


def test_dataloader_state_points_to_its_generator() -> None:
    """A DataLoader is not an MT19937 state; the message says to convert its generator."""
    state = State("dataloader", {"generator": None, "sampler_generator": None, "sampler": None})
    with pytest.raises(StateError, match="convert its generator"):
        mt_words(state)


def test_apply_refuses_a_target_of_the_wrong_kind() -> None:
    """apply checks the target before touching it: a python state cannot go into torch."""
    with pytest.raises(StateError, match="python random state"):
        apply(to_python(random.Random(1)), torch.Generator())


def test_bad_torch_seed_is_refused() -> None:
    """to_torch_cpu's seed must fit torch's u64 seed field."""
    with pytest.raises(StateError, match="seed"):
        to_torch_cpu(random.Random(1), seed=-1)


# -- which draws match across libraries (documented in docs/seeding.md) ----------------------


def _same_start(seed: int = 5) -> tuple[random.Random, np.random.RandomState, np.random.Generator]:
    python = random.Random(seed)
    legacy, mt = np.random.RandomState(), np.random.MT19937(0)
    apply(to_numpy_legacy(python), legacy)
    apply(to_numpy_mt19937(python), mt)
    return python, legacy, np.random.Generator(mt)


def test_doubles_match_between_python_and_numpy_mt19937() -> None:
    """random(), random_sample() and Generator(MT19937).random() build a double from the same
    two words the same way, so they match; so does uniform(a, b)."""
    python, legacy, generator = _same_start()
    doubles = [python.random() for _ in range(100)]
    assert legacy.random_sample(100).tolist() == doubles
    assert generator.random(100).tolist() == doubles
    python, legacy, generator = _same_start()
    assert python.uniform(2, 5) == legacy.uniform(2, 5) == generator.uniform(2, 5)


def test_torch_floats_differ_from_python_on_the_same_stream() -> None:
    """torch builds floats from other bits of the words: same stream, different doubles."""
    python = random.Random(5)
    generator = torch.Generator()
    apply(to_torch_cpu(python), generator)
    torch_doubles = torch.rand(10, dtype=torch.float64, generator=generator).tolist()
    assert torch_doubles != [python.random() for _ in range(10)]


def test_bounded_integers_differ_across_libraries() -> None:
    """randrange, randint and integers reject and scale differently: same stream, other ints."""
    python, legacy, generator = _same_start()
    draws = [
        [python.randrange(10) for _ in range(20)],
        legacy.randint(0, 10, 20).tolist(),
        generator.integers(0, 10, 20).tolist(),
    ]
    assert draws[0] != draws[1] and draws[1] != draws[2] and draws[0] != draws[2]
