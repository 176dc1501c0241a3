"""rngvault/families/torch_cuda.py: each CUDA device's default generator and CUDA Generators.

The tests marked ``cuda`` need a CUDA device (``scripts/gpu-check`` runs them); the others
use hand-built 16-byte states (seed u64 LE + Philox offset u64 LE) and run anywhere.
"""

from __future__ import annotations

import json
import random
import struct

import pytest

import rngvault
from rngvault.families import torch_cuda

torch = pytest.importorskip("torch")


def cuda_state(seed: int = 42, offset: int = 8) -> rngvault.State:
    """A CUDA generator state built by hand, as torch >= 2.1 writes it."""
    return rngvault.State("torch.cuda", {"state": struct.pack("<QQ", seed, offset)})


def assert_cuda_state_refused(fields: dict, *needles: str) -> None:
    """restore and decode both refuse a torch.cuda:0 state, naming the generator and needles."""
    snapshot = rngvault.Snapshot({"torch.cuda:0": rngvault.State("torch.cuda", fields)})
    with pytest.raises(rngvault.RestoreError) as restore_error:
        rngvault.restore(snapshot)
    with pytest.raises(rngvault.DecodeError) as decode_error:
        rngvault.decode(rngvault.encode(snapshot))
    for message in (str(restore_error.value), str(decode_error.value)):
        for needle in ("'torch.cuda:0'", *needles):
            assert needle in message, f"{needle!r} not in {message!r}"


# -- validation and targets, on any machine ----------------------------------------------


def test_offset_not_a_multiple_of_4_is_refused():
    """The Philox offset grows by 4 per launch: offset 6 is refused, naming it."""
    assert_cuda_state_refused(
        {"state": struct.pack("<QQ", 42, 6)}, "'state.offset'", "offset 6 is not a multiple of 4"
    )


def test_state_of_15_bytes_is_refused():
    """Size: a CUDA state is 16 bytes."""
    assert_cuda_state_refused({"state": bytes(15)}, "'state'", "expected 16 bytes, got 15")


def test_816_byte_state_from_old_torch_is_refused():
    """The 816-byte state of torch < 2.1 is refused with a message that says so."""
    assert_cuda_state_refused({"state": bytes(816)}, "'state'", "816-byte", "torch < 2.1")


def test_state_that_is_not_bytes_is_refused():
    """Type: the state is bytes, not a list of ints."""
    assert_cuda_state_refused({"state": list(range(16))}, "'state'", "expected bytes")


def test_unknown_field_is_refused():
    """A field no version ever wrote is refused, naming it."""
    fields = {"state": struct.pack("<QQ", 42, 8), "device": 0}
    assert_cuda_state_refused(fields, "unknown field", "'device'")


def test_describe_shows_offset_and_seed():
    """describe() gives the Philox offset and the seed."""
    assert cuda_state(seed=42, offset=8).describe() == "Philox offset 8, seed 42"


def test_cuda_state_into_a_cpu_generator_is_refused():
    """Family tag vs target: a CUDA state cannot go into a CPU generator; it is untouched."""
    target = torch.Generator().manual_seed(1)
    before = target.get_state().clone()
    snapshot = rngvault.Snapshot({"gen": cuda_state()})
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*CUDA.*on cpu"):
        rngvault.restore(snapshot, {"gen": target}, include_globals=False)
    assert torch.equal(target.get_state(), before)


def test_cuda_states_are_skipped_where_there_is_no_cuda(monkeypatch):
    """In a process without CUDA, torch.cuda:N states are skipped and listed in the report,
    with a note that CUDA streams will differ; the rest is restored."""
    monkeypatch.setattr(torch_cuda, "device_count", lambda: 0)
    rng = random.Random(1)
    python_state = rngvault.capture({"rng": rng}, include_globals=False).states["rng"]
    expected = rng.random()
    snapshot = rngvault.Snapshot({"rng": python_state, "torch.cuda:0": cuda_state()})
    target = random.Random(2)
    report = rngvault.restore(snapshot, {"rng": target})
    assert report.skipped == ["torch.cuda:0"]
    assert "CUDA is not available" in report["torch.cuda:0"].detail
    assert any("torch.cuda:0" in note and "CUDA" in note for note in report.notes)
    assert target.random() == expected


def test_fewer_devices_is_an_error_naming_the_missing_ones(monkeypatch):
    """Restoring torch.cuda:0..2 where one device is visible names cuda:1 and cuda:2 and
    touches nothing."""
    monkeypatch.setattr(torch_cuda, "device_count", lambda: 1)
    states = {f"torch.cuda:{i}": cuda_state(seed=i) for i in range(3)}
    rng = random.Random(1)
    states["rng"] = rngvault.capture({"rng": random.Random(3)}, include_globals=False).states["rng"]
    before = rng.getstate()
    with pytest.raises(rngvault.RestoreError) as info:
        rngvault.restore(rngvault.Snapshot(states), {"rng": rng})
    message = str(info.value)
    assert "'torch.cuda:1'" in message and "'torch.cuda:2'" in message
    assert "CUDA device 2 does not exist here (1 visible)" in message
    assert "'torch.cuda:0'" not in message
    assert rng.getstate() == before


CAPTURE_WITHOUT_INIT = """
import json
import torch
import rngvault

snapshot = rngvault.capture()
print(json.dumps({
    "initialized": torch.cuda.is_initialized(),
    "names": sorted(snapshot.states),
}))
"""


def test_capture_does_not_initialize_cuda(run_python):
    """In a new interpreter that imported torch, capture() leaves CUDA uninitialized and
    holds no torch.cuda state."""
    done = run_python(CAPTURE_WITHOUT_INIT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {
        "initialized": False,
        "names": ["numpy.global", "python.global", "torch.cpu"],
    }


# -- on a CUDA device ---------------------------------------------------------------------

CAPTURE_AFTER_INIT = """
import json
import torch
import rngvault

before = sorted(rngvault.capture().states)
initialized_by_capture = torch.cuda.is_initialized()
torch.cuda.init()
after = sorted(rngvault.capture().states)
print(json.dumps({
    "before": before,
    "initialized_by_capture": initialized_by_capture,
    "after": after,
    "devices": torch.cuda.device_count(),
}))
"""


@pytest.mark.cuda
def test_capture_includes_every_device_once_cuda_is_initialized(run_python):
    """Before CUDA is initialized capture() holds no torch.cuda state and does not initialize
    it; once initialized, it holds torch.cuda:N for every device."""
    done = run_python(CAPTURE_AFTER_INIT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["initialized_by_capture"] is False
    assert not [n for n in result["before"] if n.startswith("torch.cuda:")]
    devices = [f"torch.cuda:{i}" for i in range(result["devices"])]
    assert devices
    assert [n for n in result["after"] if n.startswith("torch.cuda:")] == devices


# Each expression draws on ``device`` from ``g``: a CUDA Generator, or None for the default.
CUDA_DRAWS = {
    "rand": "torch.rand(5, generator=g, device=device).tolist()",
    "randn_small": "torch.randn(3, generator=g, device=device).tolist()",
    "randn_large": "torch.randn(1000, generator=g, device=device).sum().item()",
    "normal_": "torch.empty(3, device=device).normal_(generator=g).tolist()",
    "randint": "torch.randint(0, 10**9, (5,), generator=g, device=device).tolist()",
    "randperm": "torch.randperm(30, generator=g, device=device).tolist()",
    "bernoulli": "torch.bernoulli(torch.full((20,), 0.5, device=device), generator=g).tolist()",
}
DEFAULT_CUDA_DRAWS = {
    **CUDA_DRAWS,
    "dropout": "torch.nn.functional.dropout(torch.ones(40, device=device), 0.5, True).tolist()",
}


@pytest.mark.cuda
@pytest.mark.parametrize("draw", DEFAULT_CUDA_DRAWS)
def test_default_cuda_generators_repeat_every_draw_after_restore(replay, draw):
    """capture -> draw -> restore -> draw is bit-exact for every device's default generator."""
    torch.cuda.init()
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        torch.rand(3, device=device)  # move the offset away from 0
        namespace = {"torch": torch, "g": None, "device": device}
        snapshot, first, again, moved = replay(
            {}, {draw: DEFAULT_CUDA_DRAWS[draw]}, namespace, include_globals=True
        )
        _seed, offset = torch_cuda.parse(snapshot.states[f"torch.cuda:{index}"].fields["state"])
        assert offset > 0 and offset % 4 == 0
        assert again == first, device
        assert moved != first, device


@pytest.mark.cuda
@pytest.mark.parametrize("draw", CUDA_DRAWS)
def test_cuda_generator_repeats_every_draw_after_restore(replay, draw):
    """capture -> draw -> restore -> draw is bit-exact for a CUDA torch.Generator."""
    g = torch.Generator(device="cuda").manual_seed(5)
    torch.rand(3, generator=g, device="cuda")
    namespace = {"torch": torch, "g": g, "device": torch.device("cuda")}
    snapshot, first, again, moved = replay({"g": g}, {draw: CUDA_DRAWS[draw]}, namespace)
    assert snapshot.states["g"].family == "torch.cuda"
    assert again == first
    assert moved != first


@pytest.mark.cuda
def test_cuda_generator_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """Encode, decode in a new interpreter, restore into a fresh CUDA Generator: same draws."""
    g = torch.Generator(device="cuda").manual_seed(6)
    torch.rand(3, generator=g, device="cuda")
    namespace = {"torch": torch, "g": g, "device": torch.device("cuda")}
    snapshot, first, _again, _moved = replay({"g": g}, CUDA_DRAWS, namespace)
    setup = (
        "device = torch.device('cuda')\n"
        "g = torch.Generator(device='cuda').manual_seed(999)\n"
        "targets = {'g': g}"
    )
    elsewhere = restore_elsewhere(snapshot, setup, CUDA_DRAWS, imports="import torch")
    assert elsewhere["restored"] == ["g"]
    assert elsewhere["results"] == first


@pytest.mark.cuda
def test_default_cuda_generator_repeats_draws_in_a_new_process(replay, restore_elsewhere):
    """torch.cuda:0 restored in a new interpreter continues the captured stream."""
    torch.cuda.init()
    device = torch.device("cuda", 0)
    torch.rand(3, device=device)
    namespace = {"torch": torch, "g": None, "device": device}
    snapshot, first, _again, _moved = replay(
        {}, DEFAULT_CUDA_DRAWS, namespace, include_globals=True
    )
    setup = "torch.cuda.init()\ndevice = torch.device('cuda', 0)\ng = None\ntargets = {}"
    elsewhere = restore_elsewhere(
        snapshot, setup, DEFAULT_CUDA_DRAWS, imports="import torch", include_globals=True
    )
    assert "torch.cuda:0" in elsewhere["restored"]
    assert elsewhere["results"] == first


@pytest.mark.cuda
def test_cuda_generator_state_is_seed_and_offset():
    """A CUDA Generator's state is 16 bytes: its seed and a Philox offset that moved."""
    g = torch.Generator(device="cuda").manual_seed(7)
    state = rngvault.capture({"g": g}, include_globals=False).states["g"]
    assert torch_cuda.parse(state.fields["state"]) == (7, 0)
    torch.rand(3, generator=g, device="cuda")
    state = rngvault.capture({"g": g}, include_globals=False).states["g"]
    seed, offset = torch_cuda.parse(state.fields["state"])
    assert seed == 7 and offset > 0 and offset % 4 == 0
