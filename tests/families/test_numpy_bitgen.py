"""rngvault/families/numpy_bitgen.py: NumPy Generators and BitGenerators, with the SeedSequence."""

from __future__ import annotations

import numpy as np
import pytest

import rngvault
from rngvault.families import numpy_bitgen

BIT_GENERATORS = ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"]

# Each expression draws from ``rng``, a numpy Generator.
DRAWS = {
    "random": "rng.random(5).tolist()",
    "integers": "rng.integers(0, 10**12, size=5).tolist()",
    # 32-bit draws go through the buffered half-word (has_uint32/uinteger).
    "integers_uint32": "rng.integers(0, 2**32, size=3, dtype=np.uint32).tolist()",
    "integers_int32": "[int(rng.integers(0, 10, dtype=np.int32)) for _ in range(3)]",
    "normal": "rng.normal(2.0, 3.0, size=3).tolist()",
    "standard_normal_f4": "rng.standard_normal(3, dtype=np.float32).tolist()",
    "permutation": "rng.permutation(30).tolist()",
    "shuffle": "(lambda a: (rng.shuffle(a), a.tolist())[1])(np.arange(30))",
    "choice": "rng.choice(1000, size=5).tolist()",
    "bytes": "list(rng.bytes(7))",
    "random_raw": "rng.bit_generator.random_raw(3).tolist()",
    "spawn": "[child.random(2).tolist() for child in rng.spawn(2)]",
}


def warmed_up(name: str, seed: int) -> np.random.Generator:
    """A Generator with a buffered uint32, Philox mid-buffer, and one child already spawned."""
    rng = np.random.Generator(getattr(np.random, name)(seed))
    rng.random(17)
    rng.integers(0, 2**32, dtype=np.uint32)
    rng.spawn(1)
    return rng


@pytest.mark.parametrize("draw", DRAWS)
@pytest.mark.parametrize("name", BIT_GENERATORS)
def test_generator_repeats_every_draw_after_restore(replay, name, draw):
    """capture -> draw -> restore -> draw is bit-exact for each bit generator and draw."""
    rng = warmed_up(name, 1)
    snapshot, first, again, moved = replay(
        {"rng": rng}, {draw: DRAWS[draw]}, {"rng": rng, "np": np}
    )
    fields = snapshot.states["rng"].fields
    assert fields["bit_generator"] == name
    assert fields["seed_seq"]["n_children_spawned"] == 1
    if name != "MT19937":  # MT19937 has native 32-bit outputs, no buffered half-word
        assert fields["has_uint32"] == 1
    assert again == first
    assert moved != first


@pytest.mark.parametrize("name", BIT_GENERATORS)
def test_generator_repeats_draws_in_a_new_process(replay, restore_elsewhere, name):
    """Encode, decode in a new interpreter, restore into a fresh Generator: the same draws."""
    rng = warmed_up(name, 2)
    snapshot, first, _again, _moved = replay({"rng": rng}, DRAWS, {"rng": rng, "np": np})
    setup = f"rng = np.random.Generator(np.random.{name}(999))\ntargets = {{'rng': rng}}"
    elsewhere = restore_elsewhere(snapshot, setup, DRAWS)
    assert elsewhere["restored"] == ["rng"]
    assert elsewhere["results"] == first


def test_bare_bit_generator_is_captured_and_restored(capture_state):
    """A BitGenerator given without its Generator is a numpy.bitgen target too."""
    source = np.random.PCG64(3)
    source.random_raw(5)
    state = capture_state(source)
    expected = source.random_raw(4).tolist()
    target = np.random.PCG64(4)
    rngvault.restore(rngvault.Snapshot({"gen": state}), {"gen": target}, include_globals=False)
    assert target.random_raw(4).tolist() == expected


def spawned_draws(rng: np.random.Generator) -> list[list[float]]:
    return [child.random(3).tolist() for child in rng.spawn(3)]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: np.random.default_rng(5), id="int-seed"),
        pytest.param(lambda: np.random.default_rng(), id="os-entropy-128-bit"),
        pytest.param(lambda: np.random.default_rng([1, 2, 3]), id="list-seed"),
        pytest.param(lambda: np.random.default_rng(5).spawn(2)[1], id="spawned-child"),
        pytest.param(
            lambda: np.random.Generator(np.random.PCG64(np.random.SeedSequence(5, pool_size=8))),
            id="pool-size-8",
        ),
    ],
)
def test_spawn_children_are_identical_after_restore(capture_state, make):
    """The SeedSequence (entropy, spawn_key, pool_size, children spawned) survives encoding,
    so spawn() after a restore gives the children the original would have given."""
    rng = make()
    rng.spawn(2)
    state = rngvault.decode(rngvault.encode(rngvault.Snapshot({"gen": capture_state(rng)})))
    expected = spawned_draws(rng)
    target = np.random.default_rng(12345)
    rngvault.restore(state, {"gen": target}, include_globals=False)
    original_seq, restored_seq = rng.bit_generator.seed_seq, target.bit_generator.seed_seq
    assert restored_seq.entropy == original_seq.entropy
    assert restored_seq.spawn_key == original_seq.spawn_key
    assert restored_seq.pool_size == original_seq.pool_size
    assert spawned_draws(target) == expected


def test_bit_generator_without_a_seed_sequence_is_restored(capture_state):
    """A legacy-seeded MT19937 has no SeedSequence: seed_seq is None and the state restores."""
    source = np.random.RandomState(6)._bit_generator
    assert source.seed_seq is None
    state = capture_state(source)
    assert state.fields["seed_seq"] is None
    expected = source.random_raw(3).tolist()
    target = np.random.MT19937(7)
    report = rngvault.restore(
        rngvault.Snapshot({"gen": state}), {"gen": target}, include_globals=False
    )
    assert target.random_raw(3).tolist() == expected
    assert target.seed_seq is None, "the target kept a seed sequence the original did not have"
    assert report["gen"].verified is True


def test_fields_are_numpys_state_plus_the_seed_sequence(capture_state):
    """A numpy.bitgen state is the bit generator's .state with seed_seq added."""
    rng = warmed_up("Philox", 8)
    fields = capture_state(rng).fields
    raw = rng.bit_generator.state
    assert set(fields) == set(raw) | {"seed_seq"}
    assert np.array_equal(fields["state"]["counter"], raw["state"]["counter"])
    assert np.array_equal(fields["buffer"], raw["buffer"])
    assert fields["buffer_pos"] == raw["buffer_pos"]
    assert fields["seed_seq"] == {
        "entropy": 8,
        "spawn_key": (),
        "pool_size": 4,
        "n_children_spawned": 1,
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PCG64", "PCG64 state 0x"),
        ("MT19937", "MT19937 pos "),
        ("Philox", "Philox counter [5, 0, 0, 0], buffer_pos 2/4, buffered uint32"),
        ("SFC64", "SFC64 counter "),
    ],
)
def test_describe_shows_the_position(capture_state, name, expected):
    """describe() gives each bit generator's position, the buffered word and children spawned."""
    text = capture_state(warmed_up(name, 9)).describe()
    assert text.startswith(expected)
    assert text.endswith("1 children spawned")


def test_state_into_another_bit_generator_is_refused(capture_state):
    """Family tag vs target: a PCG64 state cannot go into a Philox Generator."""
    snapshot = rngvault.Snapshot({"gen": capture_state(np.random.default_rng(1))})
    target = np.random.Generator(np.random.Philox(2))
    before = target.bit_generator.state["state"]["counter"].copy()
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*'bit_generator'.*PCG64.*Philox"):
        rngvault.restore(snapshot, {"gen": target}, include_globals=False)
    assert np.array_equal(target.bit_generator.state["state"]["counter"], before)


def test_bitgen_state_into_a_randomstate_is_refused(capture_state):
    """Family tag vs target: a Generator state cannot go into a RandomState."""
    snapshot = rngvault.Snapshot({"gen": capture_state(np.random.default_rng(1))})
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*Generator.*RandomState"):
        rngvault.restore(snapshot, {"gen": np.random.RandomState(0)}, include_globals=False)


# -- one test per validation rule --------------------------------------------------------

RULES = [
    # (bit generator, field path, bad value, what the message must contain)
    ("PCG64", "bit_generator", "ThreeFry", ["'bit_generator'", "'ThreeFry'", "supported"]),
    ("PCG64", "state.state", 2**128, ["'state.state'", str(2**128)]),
    ("PCG64DXSM", "state.inc", -1, ["'state.inc'", "-1 is out of range"]),
    ("PCG64", "has_uint32", 2, ["'has_uint32'", "2 is out of range"]),
    ("SFC64", "uinteger", 2**32, ["'uinteger'", str(2**32)]),
    ("PCG64", "uinteger", 1.5, ["'uinteger'", "float 1.5"]),
    ("MT19937", "state.pos", 700, ["'state.pos'", "700", "0..624"]),
    ("MT19937", "state.key", np.zeros(624, np.uint32), ["'state.key'", "all zeros"]),
    ("MT19937", "state.key", np.ones(624, np.int32), ["'state.key'", "int32[624]"]),
    ("Philox", "state.counter", np.ones(3, np.uint64), ["'state.counter'", "uint64[3]"]),
    ("Philox", "state.key", np.ones(2, np.uint32), ["'state.key'", "uint32[2]"]),
    ("Philox", "buffer", [1, 2, 3, 4], ["'buffer'", "expected a uint64 array"]),
    ("Philox", "buffer_pos", 5, ["'buffer_pos'", "5 is out of range 0..4"]),
    ("SFC64", "state.state", np.ones(3, np.uint64), ["'state.state'", "uint64[3]"]),
    ("PCG64", "extra", 1, ["unknown field", "'extra'"]),
    ("PCG64", "state.extra", 1, ["'state.extra'", "unknown field", "'extra'"]),
    ("PCG64", "seed_seq.entropy", -5, ["'seed_seq.entropy'", "-5"]),
    ("PCG64", "seed_seq.entropy", None, ["'seed_seq.entropy'", "None"]),
    ("PCG64", "seed_seq.spawn_key", "0", ["'seed_seq.spawn_key'", "'0'"]),
    ("PCG64", "seed_seq.pool_size", 2, ["'seed_seq.pool_size'", "2 is out of range"]),
    ("PCG64", "seed_seq.n_children_spawned", -1, ["'seed_seq.n_children_spawned'", "-1"]),
    ("PCG64", "seed_seq.extra", 1, ["'seed_seq.extra'", "unknown field", "'extra'"]),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "needles"),
    RULES,
    ids=[f"{name}-{path}={str(value)[:12]}" for name, path, value, _ in RULES],
)
def test_invalid_field_is_refused(
    capture_state, with_fields, assert_refused, name, path, value, needles
):
    """Each field is checked (range, size, dtype, all-zero key, unknown names) before numpy
    sees it; restore and decode both refuse, naming the generator, the field and the value."""
    state = capture_state(np.random.Generator(getattr(np.random, name)(1)))
    target = np.random.Generator(getattr(np.random, name)(2))
    assert_refused(with_fields(state, path, value), target, *needles)


def test_validate_raises_state_error_with_field_and_value(capture_state, with_fields):
    """numpy_bitgen.validate raises StateError carrying the field and the bad value."""
    state = with_fields(capture_state(np.random.Generator(np.random.MT19937(1))), "state.pos", 700)
    with pytest.raises(rngvault.StateError) as info:
        numpy_bitgen.validate(state.fields)
    assert (info.value.field, info.value.value) == ("state.pos", 700)


@pytest.mark.parametrize("draws", [0, 1, 311, 623, 624, 625])
def test_mt19937_restore_into_the_same_seed_sequence_writes_the_struct_exactly(draws):
    """A target whose seed sequence already matches gets key and pos written into numpy's
    state struct directly; its stream is then numpy's own from that state."""
    source = np.random.MT19937(7)
    source.random_raw(draws)
    fields = numpy_bitgen.capture(source)
    expected = source.random_raw(1300)
    target = np.random.MT19937(7)
    target.random_raw(5)
    numpy_bitgen.restore(target, fields)
    assert target.state["state"]["pos"] == fields["state"]["pos"]
    assert np.array_equal(target.random_raw(1300), expected)


def test_an_entropy_list_mixing_small_and_big_ints_is_captured_exactly():
    """NumPy mixes an entropy list element by element; capture keeps each element exactly
    (np.asarray would turn [1, 2**63 + 1] into floats and lose bits), so the children
    spawned after a restore are the original's."""
    entropy = [1, 2**63 + 1, np.uint64(2**64 - 1)]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
    fields = numpy_bitgen.capture(rng)
    assert fields["seed_seq"]["entropy"] == (1, 2**63 + 1, 2**64 - 1)
    target = np.random.Generator(np.random.PCG64(0))
    numpy_bitgen.restore(target, fields)
    assert [c.random() for c in target.spawn(2)] == [c.random() for c in rng.spawn(2)]
