"""rngvault/families/numpy_legacy.py: NumPy's RandomState and the global ``np.random``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rngvault
from rngvault.families import numpy_legacy

# Each expression draws from ``rng`` (a RandomState, or the np.random module itself).
DRAWS = {
    "random_sample": "rng.random_sample(5).tolist()",
    "randint": "rng.randint(0, 2**31, size=5).tolist()",
    "randint_int64": "rng.randint(0, 2**40, size=5, dtype=np.int64).tolist()",
    "standard_normal": "[rng.standard_normal() for _ in range(3)]",
    "normal": "rng.normal(2.0, 3.0, size=3).tolist()",
    "permutation": "rng.permutation(30).tolist()",
    "shuffle": "(lambda a: (rng.shuffle(a), a.tolist())[1])(np.arange(30))",
    "choice": "rng.choice(1000, size=5).tolist()",
    "bytes": "list(rng.bytes(7))",
}


def warmed_up(seed: int) -> np.random.RandomState:
    """A RandomState in the middle of its key, with a cached gaussian (has_gauss=1)."""
    rng = np.random.RandomState(seed)
    rng.random_sample(101)
    rng.standard_normal()
    return rng


@pytest.mark.parametrize("draw", DRAWS)
def test_randomstate_repeats_every_draw_after_restore(replay, draw):
    """capture -> draw -> restore -> draw is bit-exact for a RandomState."""
    rng = warmed_up(1)
    snapshot, first, again, moved = replay(
        {"rng": rng}, {draw: DRAWS[draw]}, {"rng": rng, "np": np}
    )
    assert snapshot.states["rng"].fields["has_gauss"] == 1
    assert again == first
    assert moved != first


@pytest.mark.parametrize("draw", DRAWS)
def test_global_numpy_repeats_every_draw_after_restore(replay, draw):
    """The global np.random state is captured as numpy.global and restored."""
    np.random.seed(2)
    np.random.standard_normal()
    snapshot, first, again, moved = replay(
        {}, {draw: DRAWS[draw]}, {"rng": np.random, "np": np}, include_globals=True
    )
    assert snapshot.states["numpy.global"].family == "numpy.legacy"
    assert again == first
    assert moved != first


def test_randomstate_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """Encode, decode in a new interpreter, restore into a fresh RandomState: the same draws."""
    rng = warmed_up(3)
    snapshot, first, _again, _moved = replay({"rng": rng}, DRAWS, {"rng": rng, "np": np})
    setup = "rng = np.random.RandomState(999)\ntargets = {'rng': rng}"
    elsewhere = restore_elsewhere(snapshot, setup, DRAWS)
    assert elsewhere["restored"] == ["rng"]
    assert elsewhere["results"] == first


def test_global_numpy_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """numpy.global restored in a new interpreter continues the captured stream."""
    np.random.seed(4)
    np.random.standard_normal()
    snapshot, first, _again, _moved = replay(
        {}, DRAWS, {"rng": np.random, "np": np}, include_globals=True
    )
    elsewhere = restore_elsewhere(
        snapshot, "rng = np.random\ntargets = {}", DRAWS, include_globals=True
    )
    assert "numpy.global" in elsewhere["restored"]
    assert elsewhere["results"] == first


def test_cached_gaussian_is_part_of_the_state(capture_state):
    """has_gauss/gauss are captured, and the next standard_normal() returns the cached value."""
    state = capture_state(warmed_up(5))
    assert state.fields["has_gauss"] == 1
    target = np.random.RandomState(0)
    rngvault.restore(rngvault.Snapshot({"gen": state}), {"gen": target}, include_globals=False)
    assert target.standard_normal() == state.fields["gauss"]


def test_fields_are_key_pos_and_the_gaussian_cache(capture_state):
    """A numpy.legacy state holds key uint32[624], pos, has_gauss and gauss."""
    rng = warmed_up(6)
    raw = rng.get_state(legacy=False)
    fields = capture_state(rng).fields
    assert set(fields) == {"key", "pos", "has_gauss", "gauss"}
    assert fields["key"].dtype == np.uint32 and fields["key"].shape == (624,)
    assert np.array_equal(fields["key"], raw["state"]["key"])
    assert (fields["pos"], fields["has_gauss"], fields["gauss"]) == (
        raw["state"]["pos"],
        raw["has_gauss"],
        raw["gauss"],
    )


def test_describe_shows_pos_and_cached_gauss(capture_state):
    """describe() gives the MT position and says when a gaussian is cached."""
    rng = np.random.RandomState(7)
    assert capture_state(rng).describe() == "MT pos 624/624"
    rng.standard_normal()
    assert capture_state(rng).describe() == "MT pos 8/624, cached gauss"  # polar method


def test_randomstate_over_another_bit_generator_is_not_capturable():
    """A RandomState over PCG64 is a CaptureError that says to track the bit generator."""
    with pytest.raises(rngvault.CaptureError, match=r"'rs'.*PCG64.*numpy\.bitgen"):
        rngvault.capture({"rs": np.random.RandomState(np.random.PCG64(1))}, include_globals=False)


def test_state_into_a_randomstate_over_pcg64_is_refused(capture_state):
    """Target check: an MT19937 state cannot go into a RandomState that runs PCG64."""
    snapshot = rngvault.Snapshot({"gen": capture_state(np.random.RandomState(1))})
    target = np.random.RandomState(np.random.PCG64(2))
    before = target.random_sample()
    target = np.random.RandomState(np.random.PCG64(2))
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*runs PCG64, not MT19937"):
        rngvault.restore(snapshot, {"gen": target}, include_globals=False)
    assert target.random_sample() == before


def test_legacy_state_into_a_generator_is_refused(capture_state):
    """Family tag vs target: a RandomState state cannot go into a numpy Generator."""
    snapshot = rngvault.Snapshot({"gen": capture_state(np.random.RandomState(1))})
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*RandomState.*Generator"):
        rngvault.restore(snapshot, {"gen": np.random.default_rng(0)}, include_globals=False)


# -- one test per validation rule --------------------------------------------------------


def test_key_of_623_words_is_refused(capture_state, with_fields, assert_refused):
    """Size: the key is uint32[624]; the message gives the shape found."""
    state = capture_state(np.random.RandomState(1))
    bad = with_fields(state, "key", state.fields["key"][:623])
    assert_refused(bad, np.random.RandomState(0), "'key'", "uint32[624]", "uint32[623]")


def test_key_of_the_wrong_dtype_is_refused(capture_state, with_fields, assert_refused):
    """Dtype: a uint64 key is refused, naming the dtype found."""
    state = capture_state(np.random.RandomState(1))
    bad = with_fields(state, "key", state.fields["key"].astype(np.uint64))
    assert_refused(bad, np.random.RandomState(0), "'key'", "uint64[624]")


def test_key_that_is_not_an_array_is_refused(capture_state, with_fields, assert_refused):
    """Type: the key must be a typed array, not a list of ints."""
    state = capture_state(np.random.RandomState(1))
    bad = with_fields(state, "key", tuple(int(x) for x in state.fields["key"]))
    assert_refused(bad, np.random.RandomState(0), "'key'", "tuple")


def test_all_zero_key_is_refused(capture_state, with_fields, assert_refused):
    """An all-zero MT key never recovers: refused, naming the key."""
    state = capture_state(np.random.RandomState(1))
    bad = with_fields(state, "key", np.zeros(624, dtype=np.uint32))
    assert_refused(bad, np.random.RandomState(0), "'key'", "all zeros")


@pytest.mark.parametrize("pos", [625, -1])
def test_pos_outside_0_to_624_is_refused(capture_state, with_fields, assert_refused, pos):
    """pos must be within 0..624; the message gives the bad value."""
    state = capture_state(np.random.RandomState(1))
    assert_refused(
        with_fields(state, "pos", pos), np.random.RandomState(0), "'pos'", str(pos), "0..624"
    )


POS_700 = """
import json
import numpy as np
import rngvault

rs = np.random.RandomState(1)
state = rngvault.capture({"rs": rs}, include_globals=False).states["rs"]
bad = rngvault.Snapshot({"rs": rngvault.State("numpy.legacy", {**state.fields, "pos": 700})})
messages = {}
try:
    rngvault.restore(bad, {"rs": rs}, include_globals=False)
except rngvault.RestoreError as exc:
    messages["RestoreError"] = str(exc)
try:
    rngvault.decode(rngvault.encode(bad))
except rngvault.DecodeError as exc:
    messages["DecodeError"] = str(exc)
print(json.dumps(messages))
print("still drawing", rs.random_sample(5000).shape)
"""


def test_pos_700_is_refused_and_the_process_survives(run_python):
    """NumPy takes pos=700 and reads past the key; rngvault refuses it before NumPy sees it.

    Runs in a new interpreter: a crash there would show as a non-zero return code.
    """
    done = run_python(POS_700)
    assert done.returncode == 0, done.stderr
    messages_line, drawing_line = done.stdout.splitlines()
    messages = json.loads(messages_line)
    assert set(messages) == {"RestoreError", "DecodeError"}
    for message in messages.values():
        assert "'rs'" in message and "'pos'" in message and "700" in message
    assert drawing_line == "still drawing (5000,)"


def test_has_gauss_other_than_0_or_1_is_refused(capture_state, with_fields, assert_refused):
    """has_gauss is a 0/1 flag."""
    state = capture_state(np.random.RandomState(1))
    bad = with_fields(state, "has_gauss", 2)
    assert_refused(bad, np.random.RandomState(0), "'has_gauss'", "2 is out of range")


def test_gauss_that_is_not_a_float_is_refused(capture_state, with_fields, assert_refused):
    """gauss is a float (NumPy keeps 0.0 when nothing is cached)."""
    state = capture_state(np.random.RandomState(1))
    bad = with_fields(state, "gauss", None)
    assert_refused(bad, np.random.RandomState(0), "'gauss'", "NoneType")


def test_unknown_field_is_refused(capture_state, with_fields, assert_refused):
    """A field no version ever wrote is refused, naming it."""
    state = capture_state(np.random.RandomState(1))
    bad = with_fields(state, "bit_generator", "MT19937")
    assert_refused(bad, np.random.RandomState(0), "unknown field", "'bit_generator'")


def test_validate_raises_state_error_with_field_and_value(capture_state, with_fields):
    """numpy_legacy.validate raises StateError carrying the field and the bad value."""
    state = with_fields(capture_state(np.random.RandomState(1)), "pos", 700)
    with pytest.raises(rngvault.StateError) as info:
        numpy_legacy.validate(state.fields)
    assert (info.value.field, info.value.value) == ("pos", 700)
