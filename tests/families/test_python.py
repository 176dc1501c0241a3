"""rngvault/families/python.py: Python's ``random`` (global and ``random.Random``)."""

from __future__ import annotations

import random

import numpy as np
import pytest

import rngvault
from rngvault.families import python

# Each expression draws from ``rng`` (a random.Random, or the random module itself).
DRAWS = {
    "random": "[rng.random() for _ in range(5)]",
    "randint": "[rng.randint(0, 10**12) for _ in range(5)]",
    "gauss": "[rng.gauss(0.0, 1.0) for _ in range(3)]",
    "shuffle": "(lambda xs: (rng.shuffle(xs), xs)[1])(list(range(30)))",
    "choice": "[rng.choice('abcdefghijklmnop') for _ in range(10)]",
    "sample": "rng.sample(range(10**6), 5)",
    "getrandbits": "rng.getrandbits(200)",
}


def warmed_up(seed: int) -> random.Random:
    """A generator in the middle of its key, with a cached second normal (gauss_next)."""
    rng = random.Random(seed)
    for _ in range(100):
        rng.random()
    rng.gauss(0.0, 1.0)
    return rng


@pytest.mark.parametrize("draw", DRAWS)
def test_random_instance_repeats_every_draw_after_restore(replay, draw):
    """capture -> draw -> restore -> draw is bit-exact for a random.Random."""
    rng = warmed_up(1)
    snapshot, first, again, moved = replay({"rng": rng}, {draw: DRAWS[draw]}, {"rng": rng})
    assert snapshot.states["rng"].fields["gauss_next"] is not None
    assert again == first
    assert moved != first


@pytest.mark.parametrize("draw", DRAWS)
def test_global_random_repeats_every_draw_after_restore(replay, draw):
    """The random module's global generator is captured as python.global and restored."""
    random.seed(2)
    random.gauss(0.0, 1.0)
    snapshot, first, again, moved = replay(
        {}, {draw: DRAWS[draw]}, {"rng": random}, include_globals=True
    )
    assert snapshot.states["python.global"].family == "python"
    assert again == first
    assert moved != first


def test_random_instance_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """Encode, decode in a new interpreter, restore into a fresh Random: the same draws."""
    rng = warmed_up(3)
    snapshot, first, _again, _moved = replay({"rng": rng}, DRAWS, {"rng": rng})
    elsewhere = restore_elsewhere(
        snapshot, "rng = random.Random(999)\ntargets = {'rng': rng}", DRAWS
    )
    assert elsewhere["restored"] == ["rng"]
    assert elsewhere["results"] == first


def test_global_random_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """python.global restored in a new interpreter continues the captured stream."""
    random.seed(4)
    random.gauss(0.0, 1.0)
    snapshot, first, _again, _moved = replay({}, DRAWS, {"rng": random}, include_globals=True)
    elsewhere = restore_elsewhere(
        snapshot, "rng = random\ntargets = {}", DRAWS, include_globals=True
    )
    assert "python.global" in elsewhere["restored"]
    assert elsewhere["results"] == first


def test_gauss_next_is_part_of_the_state(capture_state):
    """The cached second normal is captured, and the first gauss() after a restore returns it."""
    rng = warmed_up(5)
    state = capture_state(rng)
    cached = state.fields["gauss_next"]
    assert isinstance(cached, float)
    target = random.Random(0)
    rngvault.restore(rngvault.Snapshot({"gen": state}), {"gen": target}, include_globals=False)
    assert target.gauss(0.0, 1.0) == cached


def test_fields_are_key_index_and_gauss_next(capture_state):
    """A python state holds the 624 key words, the index and gauss_next, as random has them."""
    rng = warmed_up(6)
    _version, internal, gauss_next = rng.getstate()
    fields = capture_state(rng).fields
    assert set(fields) == {"key", "index", "gauss_next"}
    assert list(fields["key"]) == list(internal[:624])
    assert fields["index"] == internal[624]
    assert fields["gauss_next"] == gauss_next


def test_describe_shows_the_index_and_the_cached_gauss(capture_state):
    """describe() gives the MT index and says when a normal is cached."""
    rng = random.Random(7)
    assert capture_state(rng).describe() == "MT index 624/624"
    rng.random()
    rng.gauss(0.0, 1.0)
    assert capture_state(rng).describe() == "MT index 6/624, cached gauss"  # 2 words per random()


def test_system_random_is_not_capturable():
    """SystemRandom reads the OS and has no state: capturing it is a CaptureError."""
    with pytest.raises(rngvault.CaptureError, match="SystemRandom"):
        rngvault.capture({"os": random.SystemRandom()}, include_globals=False)


def test_python_state_into_a_numpy_randomstate_is_refused(capture_state):
    """Family tag vs target: a python state cannot go into a RandomState; nothing is touched."""
    target = np.random.RandomState(0)
    before = target.get_state(legacy=False)
    snapshot = rngvault.Snapshot({"gen": capture_state(random.Random(1))})
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*python.*RandomState"):
        rngvault.restore(snapshot, {"gen": target}, include_globals=False)
    after = target.get_state(legacy=False)
    assert np.array_equal(after["state"]["key"], before["state"]["key"])


# -- one test per validation rule --------------------------------------------------------


def test_key_of_623_words_is_refused(capture_state, with_fields, assert_refused):
    """Size: the key must have 624 words; the message names the field and the length."""
    state = capture_state(random.Random(1))
    bad = with_fields(state, "key", state.fields["key"][:623])
    assert_refused(bad, random.Random(0), "'key'", "623")


def test_key_word_wider_than_32_bits_is_refused(capture_state, with_fields, assert_refused):
    """Type: every key word is a 32-bit unsigned integer; the message names the word."""
    state = capture_state(random.Random(1))
    bad = with_fields(state, "key", (*state.fields["key"][:623], 2**32))
    assert_refused(bad, random.Random(0), "'key'", "word 623", str(2**32))


def test_key_that_is_not_a_sequence_is_refused(capture_state, with_fields, assert_refused):
    """Type: the key must be a sequence of integers, not bytes."""
    state = capture_state(random.Random(1))
    bad = with_fields(state, "key", b"\x01" * 624)
    assert_refused(bad, random.Random(0), "'key'", "bytes")


def test_all_zero_key_is_refused(capture_state, with_fields, assert_refused):
    """An all-zero MT key never recovers: refused, naming the key."""
    state = capture_state(random.Random(1))
    bad = with_fields(state, "key", (0,) * 624)
    assert_refused(bad, random.Random(0), "'key'", "all zeros")


@pytest.mark.parametrize("index", [625, -1])
def test_index_outside_0_to_624_is_refused(capture_state, with_fields, assert_refused, index):
    """The index must be within 0..624; the message gives the bad value."""
    state = capture_state(random.Random(1))
    assert_refused(
        with_fields(state, "index", index), random.Random(0), "'index'", str(index), "0..624"
    )


def test_gauss_next_that_is_not_a_float_is_refused(capture_state, with_fields, assert_refused):
    """gauss_next is a float or None."""
    state = capture_state(random.Random(1))
    bad = with_fields(state, "gauss_next", "0.5")
    assert_refused(bad, random.Random(0), "'gauss_next'", "'0.5'")


def test_unknown_field_is_refused(capture_state, with_fields, assert_refused):
    """A field no version ever wrote is refused, so corruption cannot pass as extra data."""
    state = capture_state(random.Random(1))
    assert_refused(with_fields(state, "version", 3), random.Random(0), "unknown field", "'version'")


def test_missing_field_is_refused(capture_state, without_field, assert_refused):
    """A state without its index is refused, naming the missing field."""
    state = capture_state(random.Random(1))
    assert_refused(without_field(state, "index"), random.Random(0), "'index'", "missing")


def test_validate_raises_state_error_with_field_and_value(capture_state, with_fields):
    """python.validate raises StateError carrying the field and the bad value."""
    state = with_fields(capture_state(random.Random(1)), "index", 700)
    with pytest.raises(rngvault.StateError) as info:
        python.validate(state.fields)
    assert (info.value.field, info.value.value) == ("index", 700)


def test_key_that_twists_into_zeros_is_refused(assert_refused):
    """Only the top bit of word 0 and words 1..623 feed the twist: a key that has nothing
    else is refused like an all-zero one, and a key with word 0's top bit set is fine."""
    stuck = rngvault.State("python", {"key": (2**31 - 1,) + (0,) * 623, "index": 0,
                                      "gauss_next": None})  # fmt: skip
    assert_refused(stuck, random.Random(0), "'key'", "all zeros")
    live = rngvault.State("python", {"key": (2**31,) + (0,) * 623, "index": 624,
                                     "gauss_next": None})  # fmt: skip
    target = random.Random(0)
    report = rngvault.restore(rngvault.Snapshot({"g": live}), {"g": target}, include_globals=False)
    assert report.restored == ["g"]
    assert any(target.getrandbits(32) for _ in range(624 * 4))  # slow to mix, but not stuck


def test_an_int_too_large_for_a_float_is_refused_naming_the_field():
    """gauss_next takes ints that widen to a float; 2**1100 does not, and is refused by
    validate (not an OverflowError), naming the field."""
    fields = {"key": (2**31,) + (5,) * 623, "index": 624, "gauss_next": 2**1100}
    with pytest.raises(rngvault.StateError) as info:
        python.validate(fields)
    assert info.value.field == "gauss_next" and "1101-bit int" in str(info.value)
