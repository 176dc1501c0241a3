"""Tests for rngvault/_diff.py: statuses and draw distances, checked against known advances."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rngvault import Snapshot, State, StateError, capture, decode, encode
from rngvault._diff import (
    CUDA_OFFSET,
    EPOCHS,
    MT32,
    RAW64,
    DiffReport,
    GeneratorDiff,
    diff,
    state_distance,
)
from rngvault._distance import lcg_distance, mt_distance

torch = pytest.importorskip("torch", reason="torch is not installed")

Capture = Callable[[Any], State]
BIT_GENERATORS = ["PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937"]


def bit_generator(name: str, seed: int = 3) -> np.random.BitGenerator:
    generator: np.random.BitGenerator = getattr(np.random, name)(seed)
    return generator


def cuda_state(seed: int, offset: int) -> State:
    """A CUDA generator state built by hand: seed u64 LE, Philox offset u64 LE."""
    return State("torch.cuda", {"state": struct.pack("<QQ", seed, offset)})


def raw_words(generator: torch.Generator, pairs: int) -> None:
    """Draw ``2 * pairs`` raw 32-bit MT outputs: a full-range int64 draw takes two words."""
    torch.empty(pairs, dtype=torch.int64).random_(-(2**63), None, generator=generator)


# -- NumPy bit generators ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BIT_GENERATORS)
@pytest.mark.parametrize("n", [1, 623, 624, 5000, 123_457])
def test_random_raw_n_outputs_is_distance_n(capture_state: Capture, name: str, n: int) -> None:
    """n random_raw outputs put B exactly n raw outputs ahead of A, and A n behind B."""
    generator = bit_generator(name)
    generator.random_raw(17)
    a = capture_state(generator)
    generator.random_raw(n)
    b = capture_state(generator)
    unit = MT32 if name == "MT19937" else RAW64
    ahead = state_distance(a, b, name="g")
    assert (ahead.status, ahead.distance, ahead.unit) == ("advanced", n, unit)
    behind = state_distance(b, a)
    assert (behind.status, behind.distance, behind.unit) == ("behind", -n, unit)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=0, max_value=2**127), name=st.sampled_from(["PCG64", "PCG64DXSM"]))
def test_pcg_advance_n_is_distance_n(n: int, name: str) -> None:
    """PCG64 and PCG64DXSM advance(n) is n steps of one output each: the jump distance is n."""
    generator = bit_generator(name, seed=11)
    a = State("numpy.bitgen", {**generator.state, "seed_seq": None})
    generator.advance(n)
    b = State("numpy.bitgen", {**generator.state, "seed_seq": None})
    found = state_distance(a, b)
    assert found.distance == n
    assert found.status == ("advanced" if n else "unchanged")


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, 2**128 - 1), steps=st.integers(0, 2**128 - 1))
def test_lcg_distance_inverts_the_jump(start: int, steps: int) -> None:
    """lcg_distance(x, jump(x, n)) == n for PCG64's multiplier and an odd increment."""
    multiplier, increment, mask = 0x2360ED051FC65DA44385DF649FCCF645, 0x1234567 | 1, 2**128 - 1
    # jump by n steps with the same square-and-multiply as PCG's advance()
    acc_mult, acc_plus, cur_mult, cur_plus, n = 1, 0, multiplier, increment, steps
    while n:
        if n & 1:
            acc_mult, acc_plus = (
                (acc_mult * cur_mult) & mask,
                (acc_plus * cur_mult + cur_plus) & mask,
            )
        cur_plus = ((cur_mult + 1) * cur_plus) & mask
        cur_mult = (cur_mult * cur_mult) & mask
        n >>= 1
    end = (acc_mult * start + acc_plus) & mask
    assert lcg_distance(start, end, multiplier, increment) == steps


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_philox_advance_n_is_4n_outputs(n: int) -> None:
    """Philox advance(n) moves the counter by n blocks of 4 outputs (buffer empty at start)."""
    generator = bit_generator("Philox")
    a = State("numpy.bitgen", {**generator.state, "seed_seq": None})
    generator.advance(n)
    b = State("numpy.bitgen", {**generator.state, "seed_seq": None})
    assert state_distance(a, b).distance == 4 * n


def test_philox_counter_carry_crosses_64_bit_words() -> None:
    """Philox's position spans all four counter words: a carry into word 1 counts 2**64 * 4."""
    generator = bit_generator("Philox")
    fields = {**generator.state, "seed_seq": None}
    high = {**fields, "state": {**fields["state"], "counter": np.array([0, 1, 0, 0], np.uint64)}}
    low = {
        **fields,
        "state": {**fields["state"], "counter": np.array([2**64 - 1, 0, 0, 0], np.uint64)},
    }
    found = state_distance(State("numpy.bitgen", low), State("numpy.bitgen", high))
    assert found.distance == 4


def test_buffered_half_word_is_named_and_counted_once(capture_state: Capture) -> None:
    """A uint32 draw takes one 64-bit output and buffers its upper half; the next uint32 draw
    uses the buffer without a step: distance 0, status advanced, the half-word named."""
    generator = np.random.Generator(bit_generator("PCG64"))
    a = capture_state(generator)
    generator.integers(0, 2**32, dtype=np.uint32)
    b = capture_state(generator)
    first = state_distance(a, b)
    assert (first.status, first.distance) == ("advanced", 1)
    assert "buffered 32-bit half-word" in first.detail
    generator.integers(0, 2**32, dtype=np.uint32)
    second = state_distance(b, capture_state(generator))
    assert (second.status, second.distance) == ("advanced", 0)
    assert "used A's buffered 32-bit half-word" in second.detail


def test_half_word_appearing_without_a_step_is_unknown(capture_state: Capture) -> None:
    """A buffered half-word at the same PCG state cannot come from drawing: unknown."""
    a = capture_state(bit_generator("PCG64"))
    b = State(a.family, {**a.fields, "has_uint32": 1, "uinteger": 5})
    found = state_distance(a, b)
    assert (found.status, found.distance) == ("unknown", None)
    assert "half-word" in found.detail


@pytest.mark.parametrize(
    ("a_seed", "b_seed", "detail"),
    [(1, 2, "seed sequence entropy 1 -> entropy 2")],
)
def test_other_seed_sequence_is_reseeded(
    capture_state: Capture, a_seed: int, b_seed: int, detail: str
) -> None:
    """Generators seeded differently are reseeded, and the detail shows both seeds."""
    found = state_distance(
        capture_state(np.random.default_rng(a_seed)), capture_state(np.random.default_rng(b_seed))
    )
    assert (found.status, found.distance) == ("reseeded", None)
    assert detail in found.detail


def test_spawned_child_is_reseeded_relative_to_its_parent(capture_state: Capture) -> None:
    """A child from spawn() has another spawn key: reseeded, not a position on the parent."""
    parent = np.random.default_rng(4)
    child = parent.spawn(1)[0]
    assert state_distance(capture_state(parent), capture_state(child)).status == "reseeded"


def test_spawning_children_is_reported_without_moving(capture_state: Capture) -> None:
    """spawn() does not move the stream but changes later spawns: advanced by 0, named."""
    generator = np.random.default_rng(4)
    a = capture_state(generator)
    generator.spawn(2)
    found = state_distance(a, capture_state(generator))
    assert (found.status, found.distance) == ("advanced", 0)
    assert "children spawned 0 -> 2" in found.detail


@pytest.mark.parametrize(
    ("name", "path", "value", "detail"),
    [
        ("PCG64", ("state", "inc"), 12345 * 2 + 1, "increment"),
        ("PCG64DXSM", ("state", "inc"), 777, "increment"),
        ("Philox", ("state", "key"), np.array([1, 2], np.uint64), "key"),
    ],
)
def test_other_stream_with_same_seed_sequence_is_reseeded(
    capture_state: Capture, name: str, path: tuple[str, str], value: Any, detail: str
) -> None:
    """A PCG increment or a Philox key that differs means another stream, whatever the seed."""
    a = capture_state(bit_generator(name))
    inner = {**a.fields[path[0]], path[1]: value}
    found = state_distance(a, State(a.family, {**a.fields, path[0]: inner}))
    assert found.status == "reseeded"
    assert detail in found.detail


def test_other_bit_generator_is_reseeded(capture_state: Capture) -> None:
    """A PCG64 replaced by a Philox under the same name is reseeded, both names shown."""
    found = state_distance(
        capture_state(bit_generator("PCG64")), capture_state(bit_generator("Philox"))
    )
    assert found.status == "reseeded"
    assert "PCG64 -> Philox" in found.detail


def test_sfc64_counter_without_matching_words_is_unknown(capture_state: Capture) -> None:
    """SFC64's counter gives the distance only if stepping A reaches B's other words."""
    generator = bit_generator("SFC64")
    a = capture_state(generator)
    generator.random_raw(10)
    b = capture_state(generator)
    words = b.fields["state"]["state"].copy()
    words[0] ^= np.uint64(1)
    forged = State(b.family, {**b.fields, "state": {"state": words}})
    found = state_distance(a, forged)
    assert (found.status, found.distance) == ("unknown", None)
    assert "counter moved 10" in found.detail


def test_sfc64_counter_beyond_the_limit_is_reported_unchecked(capture_state: Capture) -> None:
    """Past the search limit the SFC64 counter still gives the distance, marked unchecked."""
    generator = bit_generator("SFC64")
    a = capture_state(generator)
    generator.random_raw(5000)
    found = state_distance(a, capture_state(generator), search_limit=100)
    assert (found.status, found.distance) == ("advanced", 5000)
    assert "not checked by stepping" in found.detail


def test_philox_same_position_other_buffer_is_unknown(capture_state: Capture) -> None:
    """At one Philox position the buffered outputs are fixed; others were set by hand."""
    generator = bit_generator("Philox")
    generator.random_raw(2)
    a = capture_state(generator)
    forged = State(a.family, {**a.fields, "buffer": a.fields["buffer"] ^ np.uint64(1)})
    assert state_distance(a, forged).status == "unknown"


# -- MT19937 families ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 300, 624, 1000, 100_000])
def test_python_getrandbits_32_n_times_is_distance_n(capture_state: Capture, n: int) -> None:
    """Each getrandbits(32) is one 32-bit MT output, in one block or across twists."""
    generator = random.Random(5)
    generator.getrandbits(32)
    a = capture_state(generator)
    for _ in range(n):
        generator.getrandbits(32)
    found = state_distance(a, capture_state(generator))
    assert (found.distance, found.unit) == (n, MT32)
    assert found.status == ("advanced" if n else "unchanged")


def test_numpy_legacy_uint32_draws_are_distance_n(capture_state: Capture) -> None:
    """RandomState.randint(0, 2**32, dtype=uint32) takes one MT output per value."""
    generator = np.random.RandomState(8)
    a = capture_state(generator)
    generator.randint(0, 2**32, size=7777, dtype=np.uint32)
    assert state_distance(a, capture_state(generator)).distance == 7777


@pytest.mark.parametrize(
    ("draw", "words"),
    [
        (lambda g: raw_words(g, 1000), 2000),
        (lambda g: torch.rand(3000, generator=g), 3000),
        (lambda g: torch.rand(700, generator=g, dtype=torch.float64), 1400),
        (lambda g: torch.randint(0, 10, (50,), generator=g), 50),
    ],
    ids=["int64-full-range", "rand-float32", "rand-float64", "randint-small"],
)
def test_torch_cpu_draws_of_known_word_counts(
    capture_state: Capture, draw: Callable[[torch.Generator], Any], words: int
) -> None:
    """torch CPU draws move the generator by their number of 32-bit MT words."""
    generator = torch.Generator().manual_seed(9)
    a = capture_state(generator)
    draw(generator)
    found = state_distance(a, capture_state(generator))
    assert (found.status, found.distance, found.unit) == ("advanced", words, MT32)


def test_torch_manual_seed_with_other_seed_is_reseeded(capture_state: Capture) -> None:
    """torch keeps the initial seed in its state: another seed is reported as reseeded."""
    generator = torch.Generator().manual_seed(1)
    a = capture_state(generator)
    generator.manual_seed(2)
    found = state_distance(a, capture_state(generator))
    assert found.status == "reseeded"
    assert "seed 1 -> 2" in found.detail


def test_torch_manual_seed_with_same_seed_goes_back(capture_state: Capture) -> None:
    """Re-seeding torch with the same seed moves it back to the start: behind by the draws."""
    generator = torch.Generator().manual_seed(1)
    start = capture_state(generator)
    torch.rand(2500, generator=generator)
    a = capture_state(generator)
    generator.manual_seed(1)
    found = state_distance(a, capture_state(generator))
    assert (found.status, found.distance) == ("behind", -2500)
    assert state_distance(start, capture_state(generator)).status == "unchanged"


def test_torch_inconsistent_next_is_unknown(capture_state: Capture) -> None:
    """A torch state whose ``next`` disagrees with ``left`` has no MT position: unknown."""
    generator = torch.Generator().manual_seed(1)
    torch.rand(10, generator=generator)
    a = capture_state(generator)
    raw = bytearray(a.fields["state"])
    struct.pack_into("<Q", raw, 16, 3)
    found = state_distance(a, State("torch.cpu", {"state": bytes(raw)}))
    assert found.status == "unknown"
    assert "next is 3" in found.detail


def test_search_limit_bounds_the_mt_search(capture_state: Capture) -> None:
    """Across twists, a distance over search_limit is unknown; within it, exact."""
    generator = random.Random(6)
    a = capture_state(generator)
    generator.getrandbits(32 * 5000)  # 5000 words
    b = capture_state(generator)
    assert state_distance(a, b, search_limit=10_000).distance == 5000
    beyond = state_distance(a, b, search_limit=4000)
    assert (beyond.status, beyond.distance) == ("unknown", None)
    assert "not within 4000 outputs" in beyond.detail
    assert state_distance(b, a, search_limit=4000).status == "unknown"


def test_default_limit_is_ten_million_outputs(capture_state: Capture) -> None:
    """With the default limit, 10**7 - 1000 outputs apart is found and 10**7 + 1000 is not."""
    generator = bit_generator("MT19937")
    a = capture_state(generator)
    generator.random_raw(10**7 - 1000)
    near = capture_state(generator)
    generator.random_raw(2000)
    far = capture_state(generator)
    assert state_distance(a, near).distance == 10**7 - 1000
    assert state_distance(near, a).distance == -(10**7 - 1000)
    assert state_distance(a, far).status == "unknown"


def test_reseeded_python_random_is_unknown(capture_state: Capture) -> None:
    """Python's state keeps no seed: a re-seeded generator is not found, so unknown."""
    found = state_distance(capture_state(random.Random(1)), capture_state(random.Random(2)))
    assert (found.status, found.distance) == ("unknown", None)


def test_same_stream_stored_differently_is_unchanged() -> None:
    """Index 624 of key K and index 0 of twist(K) are the same stream: unchanged."""
    generator = bit_generator("MT19937")
    generator.random_raw(624 - generator.state["state"]["pos"])  # to the end of a block
    key = generator.state["state"]["key"].copy()
    generator.random_raw(1)
    twisted = generator.state["state"]["key"]
    a = State("python", {"key": tuple(key.tolist()), "index": 624, "gauss_next": None})
    b = State("python", {"key": tuple(twisted.tolist()), "index": 0, "gauss_next": None})
    found = state_distance(a, b)
    assert (found.status, found.distance) == ("unchanged", 0)
    assert "stored differently" in found.detail


def test_python_cached_normal_is_named(capture_state: Capture) -> None:
    """gauss() draws a pair and caches the second: the next gauss() moves nothing but the
    cache, so B is advanced by 0 and the detail names the cached normal."""
    generator = random.Random(3)
    a = capture_state(generator)
    generator.gauss()
    b = capture_state(generator)
    first = state_distance(a, b)
    assert first.distance == 4  # two random() calls of two words each
    assert "cached normal" in first.detail
    generator.gauss()
    second = state_distance(b, capture_state(generator))
    assert (second.status, second.distance) == ("advanced", 0)
    assert "used A's cached normal" in second.detail


def test_mt_distance_walks_both_directions() -> None:
    """mt_distance finds a state ahead (positive) and behind (negative) across blocks."""
    generator = bit_generator("MT19937")
    start = generator.state["state"]
    generator.random_raw(3000)
    later = generator.state["state"]
    a, b = (start["key"], start["pos"]), (later["key"], later["pos"])
    assert mt_distance(a, b, 10_000) == 3000
    assert mt_distance(b, a, 10_000) == -3000
    assert mt_distance(a, b, 2000) is None


# -- CUDA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "status", "distance"),
    [
        ((7, 0), (7, 0), "unchanged", 0),
        ((7, 8), (7, 40), "advanced", 32),
        ((7, 40), (7, 8), "behind", -32),
        ((7, 2**60), (7, 2**60 + 4), "advanced", 4),
        ((7, 8), (8, 8), "reseeded", None),
    ],
)
def test_cuda_offsets_from_hand_built_states(
    a: tuple[int, int], b: tuple[int, int], status: str, distance: int | None
) -> None:
    """CUDA distances are offset differences in Philox offset units, same seed only."""
    found = state_distance(cuda_state(*a), cuda_state(*b))
    assert (found.status, found.distance) == (status, distance)
    if distance is not None:
        assert found.unit == CUDA_OFFSET


# -- DataLoader ----------------------------------------------------------------------------------


def test_dataloader_is_diffed_through_its_generator(capture_state: Capture) -> None:
    """A DataLoader's distance is its generator's, compared as a torch CPU generator."""
    dataset = torch.utils.data.TensorDataset(torch.arange(50))
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, shuffle=True, generator=generator)
    a, gen_a = capture_state(loader), capture_state(generator)
    list(loader)
    b, gen_b = capture_state(loader), capture_state(generator)
    found = state_distance(a, b)
    expected = state_distance(gen_a, gen_b)
    assert expected.distance is not None and expected.distance > 0
    assert (found.status, found.distance, found.unit) == ("advanced", expected.distance, MT32)


def test_dataloader_sampler_epoch_is_a_distance(capture_state: Capture) -> None:
    """A DistributedSampler's set_epoch shows as sampler epochs when no generator moved."""
    dataset = torch.utils.data.TensorDataset(torch.arange(8))
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=0)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler)
    a = capture_state(loader)
    sampler.set_epoch(3)
    found = state_distance(a, capture_state(loader))
    assert (found.status, found.distance, found.unit) == ("advanced", 3, EPOCHS)
    assert "epoch 0 -> 3" in found.detail


# -- reports -------------------------------------------------------------------------------------


def test_missing_names_are_reported_from_either_side() -> None:
    """A name in one snapshot only is missing, and the detail says which one has it."""
    a = Snapshot({"x": cuda_state(1, 0), "only_a": cuda_state(1, 0)})
    b = Snapshot({"x": cuda_state(1, 4), "only_b": cuda_state(1, 0)})
    report = diff(a, b)
    assert [e.name for e in report] == ["x", "only_a", "only_b"]
    assert (report["only_a"].status, report["only_a"].detail) == ("missing", "only in A")
    assert (report["only_b"].status, report["only_b"].detail) == ("missing", "only in B")
    assert [e.name for e in report.changed] == ["x", "only_a", "only_b"]
    assert not report.identical


def test_invalid_state_is_unknown_and_named_not_a_crash(capture_state: Capture) -> None:
    """An invalid state (pos 700, which NumPy would read past its key) is reported, not run."""
    a = capture_state(np.random.RandomState(1))
    bad = State(a.family, {**a.fields, "pos": 700})
    found = state_distance(a, bad)
    assert found.status == "unknown"
    assert "B's state is invalid" in found.detail and "pos" in found.detail


def test_other_family_under_the_same_name_is_reseeded(capture_state: Capture) -> None:
    """A name whose generator changed family is reported as reseeded, both families named."""
    found = state_distance(capture_state(random.Random(1)), capture_state(bit_generator("PCG64")))
    assert (found.status, found.family) == ("reseeded", "numpy.bitgen")
    assert "python" in found.detail


def test_report_prints_plain_integers_with_units() -> None:
    """str(report) shows each distance as a plain integer and names its unit."""
    generator = random.Random(2)
    globals_a = {"py": generator, "pcg": np.random.default_rng(1)}
    a = capture(globals_a, include_globals=False)
    generator.getrandbits(32 * 123_456)
    globals_a["pcg"].bit_generator.advance(10**12)
    b = capture(globals_a, include_globals=False)
    text = str(diff(a, b, labels=("epoch3", "epoch4")))
    assert text.startswith("diff epoch3 -> epoch4: 2 advanced")
    assert "123456" in text and MT32 in text
    assert "1000000000000" in text and RAW64 in text
    assert "123,456" not in text and "e+" not in text


def test_snapshots_read_back_from_bytes_diff_the_same() -> None:
    """Decoded snapshots (lists for tuples, big ints, arrays) give the same report."""
    py, pcg, philox = random.Random(1), np.random.default_rng(1), bit_generator("Philox")
    targets = {"py": py, "pcg": pcg, "philox": philox, "torch": torch.Generator().manual_seed(1)}
    a = capture(targets, include_globals=False)
    py.getrandbits(32 * 3000)
    pcg.bit_generator.advance(2**100)
    philox.random_raw(9)
    torch.rand(700, generator=targets["torch"])
    b = capture(targets, include_globals=False)
    direct = diff(a, b)
    assert [e.distance for e in direct] == [3000, 2**100, 9, 700]
    decoded = diff(decode(encode(a)), decode(encode(b)))
    assert {e.name: e for e in decoded} == {e.name: e for e in direct}


def test_dataloader_that_gained_a_generator_is_reseeded() -> None:
    """A loader that used the global torch generator and now has its own is not comparable."""
    fields = {"generator": None, "sampler_generator": None, "sampler": None}
    own = torch.Generator().manual_seed(0).get_state().numpy().tobytes()
    found = state_distance(
        State("dataloader", fields), State("dataloader", {**fields, "generator": own})
    )
    assert found.status == "reseeded"
    assert "generator: only B has one" in found.detail


def test_identical_snapshots_are_unchanged_everywhere() -> None:
    """diff(a, a) says every generator is unchanged at distance 0."""
    snapshot = capture({"py": random.Random(1), "np": np.random.default_rng(1)})
    report = diff(snapshot, snapshot)
    assert report.identical and len(report) == len(snapshot.states)
    assert all((e.status, e.distance) == ("unchanged", 0) for e in report)


def test_report_to_dict_round_trips_the_entries() -> None:
    """to_dict gives JSON-ready entries with the same fields as the dataclasses."""
    report = DiffReport((GeneratorDiff("g", "torch.cuda", "advanced", 4, CUDA_OFFSET),))
    assert report.to_dict() == {
        "labels": ["A", "B"],
        "entries": [
            {
                "name": "g",
                "family": "torch.cuda",
                "status": "advanced",
                "distance": 4,
                "unit": CUDA_OFFSET,
                "detail": "",
            }
        ],
    }
    assert str(report.entries[0]) == "g (torch.cuda): advanced 4 Philox offset units"


@pytest.mark.parametrize("limit", [-1, 1.5, None])
def test_bad_search_limit_is_refused(limit: Any) -> None:
    """search_limit must be a non-negative int; the message names it."""
    with pytest.raises(StateError, match="search_limit"):
        state_distance(cuda_state(1, 0), cuda_state(1, 4), search_limit=limit)


def test_diff_refuses_non_snapshots() -> None:
    """diff compares Snapshots; anything else is refused, naming the side."""
    with pytest.raises(StateError, match="B is a dict"):
        diff(Snapshot({}), {})  # type: ignore[arg-type]


@pytest.mark.cuda
def test_cuda_generator_draws_advance_by_the_offset_delta(capture_state: Capture) -> None:
    """On a real CUDA generator, draws show as advanced by the Philox offset they consumed,
    and a manual_seed with another seed as reseeded."""
    generator = torch.Generator(device="cuda").manual_seed(3)
    a = capture_state(generator)
    torch.rand(10_000, device="cuda", generator=generator)
    b = capture_state(generator)
    offset_a = struct.unpack("<QQ", a.fields["state"])[1]
    offset_b = struct.unpack("<QQ", b.fields["state"])[1]
    found = state_distance(a, b)
    assert offset_b > offset_a
    assert (found.status, found.distance, found.unit) == (
        "advanced",
        offset_b - offset_a,
        CUDA_OFFSET,
    )
    generator.manual_seed(4)
    assert state_distance(b, capture_state(generator)).status == "reseeded"


def test_a_vault_diff_names_its_columns_after_the_snapshots(tmp_path: Any) -> None:
    """vault.diff("epoch0", "epoch2") heads its table "epoch0 -> epoch2", not "A -> B";
    snapshots of two runs are named with their runs; snapshots from nowhere stay A and B."""
    import rngvault

    vault = rngvault.Vault(tmp_path, run="alice/exp", track_globals=False)
    rng = vault.track(np.random.default_rng(0), "g")
    vault.snapshot("epoch0", durable=True)
    rng.random(3)
    vault.snapshot("epoch2", durable=True)
    report = vault.diff("epoch0", "epoch2")
    assert report.labels == ("epoch0", "epoch2")
    assert str(report).splitlines()[0].startswith("diff epoch0 -> epoch2: 1 advanced")
    other = rngvault.Vault(tmp_path, run="bob/exp", track_globals=False)
    other.track(np.random.default_rng(0), "g")
    theirs = other.snapshot("epoch0", durable=True)
    assert diff(vault.get("epoch0"), theirs).labels == ("alice/exp/epoch0", "bob/exp/epoch0")
    loose = decode(encode(theirs))  # decoded bytes say nothing of where they were stored
    assert diff(loose, loose).labels == ("A", "B")
