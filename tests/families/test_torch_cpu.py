"""rngvault/families/torch_cpu.py: torch.default_generator and CPU torch.Generator objects."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import rngvault
from rngvault.families import torch_cpu

torch = pytest.importorskip("torch")

# Each expression draws from ``g``: a CPU torch.Generator, or None for the global generator.
DRAWS = {
    "rand": "torch.rand(5, generator=g).tolist()",
    # Fewer than 16 normals come one at a time through the generator's normal cache.
    "randn_small": "torch.randn(3, generator=g).tolist()",
    "randn_small_f64": "torch.randn(3, generator=g, dtype=torch.float64).tolist()",
    "randn_large": "torch.randn(40, generator=g).tolist()",
    "normal_": "torch.empty(3).normal_(generator=g).tolist()",
    "randint": "torch.randint(0, 10**9, (5,), generator=g).tolist()",
    "randperm": "torch.randperm(30, generator=g).tolist()",
    "bernoulli": "torch.bernoulli(torch.full((20,), 0.5), generator=g).tolist()",
    "multinomial": "torch.multinomial(torch.ones(10), 5, generator=g).tolist()",
}
# dropout takes no generator: it draws from the global one.
GLOBAL_DRAWS = {
    **DRAWS,
    "dropout": "torch.nn.functional.dropout(torch.ones(40), p=0.5, training=True).tolist()",
}


def warmed_up(seed: int) -> torch.Generator:
    """A CPU generator in the middle of its key, with a cached normal."""
    g = torch.Generator().manual_seed(seed)
    torch.rand(7, generator=g)
    torch.randn(1, generator=g)
    return g


@pytest.mark.parametrize("draw", DRAWS)
def test_generator_repeats_every_draw_after_restore(replay, draw):
    """capture -> draw -> restore -> draw is bit-exact for a CPU torch.Generator."""
    g = warmed_up(1)
    snapshot, first, again, moved = replay({"g": g}, {draw: DRAWS[draw]}, {"g": g, "torch": torch})
    assert torch_cpu.parse(snapshot.states["g"].fields["state"])["normal_is_valid"] == 1
    assert again == first
    assert moved != first


@pytest.mark.parametrize("draw", GLOBAL_DRAWS)
def test_global_generator_repeats_every_draw_after_restore(replay, draw):
    """torch.default_generator is captured as torch.cpu and restored (dropout included)."""
    torch.manual_seed(2)
    torch.randn(1)
    snapshot, first, again, moved = replay(
        {}, {draw: GLOBAL_DRAWS[draw]}, {"g": None, "torch": torch}, include_globals=True
    )
    assert snapshot.states["torch.cpu"].family == "torch.cpu"
    assert again == first
    assert moved != first


def test_generator_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """Encode, decode in a new interpreter, restore into a fresh Generator: the same draws."""
    g = warmed_up(3)
    snapshot, first, _again, _moved = replay({"g": g}, DRAWS, {"g": g, "torch": torch})
    setup = "g = torch.Generator().manual_seed(999)\ntargets = {'g': g}"
    elsewhere = restore_elsewhere(snapshot, setup, DRAWS, imports="import torch")
    assert elsewhere["restored"] == ["g"]
    assert elsewhere["results"] == first


def test_global_generator_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """torch.cpu restored in a new interpreter continues the captured stream, dropout too."""
    torch.manual_seed(4)
    torch.randn(1)
    snapshot, first, _again, _moved = replay(
        {}, GLOBAL_DRAWS, {"g": None, "torch": torch}, include_globals=True
    )
    elsewhere = restore_elsewhere(
        snapshot,
        "torch.manual_seed(999)\ng = None\ntargets = {}",
        GLOBAL_DRAWS,
        imports="import torch",
        include_globals=True,
    )
    assert "torch.cpu" in elsewhere["restored"]
    assert elsewhere["results"] == first


def test_normal_cache_is_part_of_the_state(capture_state):
    """The cached normal is captured: a restored generator's small randn equals the original's."""
    g = warmed_up(5)
    state = capture_state(g)
    assert torch_cpu.parse(state.fields["state"])["normal_is_valid"] == 1
    expected = torch.randn(1, generator=g, dtype=torch.float64).item()
    target = torch.Generator().manual_seed(6)
    rngvault.restore(rngvault.Snapshot({"gen": state}), {"gen": target}, include_globals=False)
    assert torch.randn(1, generator=target, dtype=torch.float64).item() == expected


def test_state_is_the_5056_bytes_torch_returns(capture_state):
    """A torch.cpu state is get_state()'s bytes, unchanged."""
    g = warmed_up(7)
    state = capture_state(g)
    assert set(state.fields) == {"state"}
    assert state.fields["state"] == g.get_state().numpy().tobytes()
    assert len(state.fields["state"]) == torch_cpu.STATE_SIZE


def test_restore_report_says_restored_and_verified(capture_state):
    """The report lists the generator as restored, verified by capturing it again."""
    state = capture_state(warmed_up(8))
    report = rngvault.restore(
        rngvault.Snapshot({"gen": state}), {"gen": torch.Generator()}, include_globals=False
    )
    assert report["gen"].status == "restored"
    assert report["gen"].verified is True


def test_describe_shows_index_seed_and_cached_normal(capture_state):
    """describe() gives the MT index, the initial seed and the normal cache."""
    g = torch.Generator().manual_seed(11)
    assert capture_state(g).describe() == "MT index 624/624, seed 11"  # twists first
    torch.randn(1, generator=g)
    assert capture_state(g).describe().endswith(", seed 11, cached normal")


def test_cpu_state_into_a_numpy_generator_is_refused(capture_state):
    """Family tag vs target: a torch CPU state cannot go into a numpy Generator."""
    snapshot = rngvault.Snapshot({"gen": capture_state(warmed_up(1))})
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*torch CPU.*Generator"):
        rngvault.restore(snapshot, {"gen": np.random.default_rng(0)}, include_globals=False)


# -- one test per validation rule --------------------------------------------------------


def patched(state: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(state)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def zero_words(state: bytes) -> bytes:
    return state[:24] + bytes(624 * 8) + state[24 + 624 * 8 :]


RULES = [
    # (how to spoil the state, what the message must contain)
    (lambda s: s[:-1], ["'state'", "expected 5056 bytes, got 5055"]),
    (lambda s: s + b"\0" * 760, ["'state'", "got 5816"]),
    (lambda s: np.frombuffer(s, np.uint8), ["'state'", "expected bytes, got ndarray"]),
    (lambda s: patched(s, 12, "<i", 0), ["'state.seeded'", "seeded flag is 0"]),
    (lambda s: patched(s, 8, "<i", 0), ["'state.left'", "left is 0, outside 1..624"]),
    (lambda s: patched(s, 8, "<i", 625), ["'state.left'", "left is 625"]),
    (lambda s: patched(s, 16, "<Q", 625), ["'state.next'", "next is 625 with left"]),
    (lambda s: patched(s, 24 + 8 * 100, "<Q", 2**32), ["'state.words'", "wider than 32 bits"]),
    (zero_words, ["'state.words'", "all zeros"]),
    (lambda s: patched(s, 5040, "<i", 2), ["'state.normal_is_valid'", "normal_is_valid is 2"]),
    (lambda s: patched(s, 5052, "<B", 7), ["'state.float_normal_is_valid'", "is 7"]),
]
RULE_IDS = [
    "size-5055",
    "size-5816",
    "not-bytes",
    "seeded-0",
    "left-0",
    "left-625",
    "next-625",
    "word-33-bits",
    "all-zero-key",
    "normal-flag",
    "float-normal-flag",
]


@pytest.mark.parametrize(("spoil", "needles"), RULES, ids=RULE_IDS)
def test_invalid_state_is_refused(capture_state, with_fields, assert_refused, spoil, needles):
    """Size, seeded flag, left/next, key words and cache flags are checked before torch sees
    the state; restore and decode both refuse, naming the generator, field and value."""
    state = capture_state(warmed_up(1))
    bad = with_fields(state, "state", spoil(state.fields["state"]))
    assert_refused(bad, torch.Generator().manual_seed(2), *needles)


def test_unknown_field_is_refused(capture_state, with_fields, assert_refused):
    """A field no version ever wrote is refused, naming it."""
    state = capture_state(warmed_up(1))
    bad = with_fields(state, "device", "cpu")
    assert_refused(bad, torch.Generator(), "unknown field", "'device'")


def test_validate_raises_state_error_with_field_and_value(capture_state):
    """torch_cpu.validate raises StateError carrying the field and the bad value."""
    state = patched(capture_state(warmed_up(1)).fields["state"], 16, "<Q", 700)
    with pytest.raises(rngvault.StateError) as info:
        torch_cpu.validate({"state": state})
    assert (info.value.field, info.value.value) == ("state.next", 700)
