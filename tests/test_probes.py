"""Probes: the first draws of each generator, computed from a copy of its state."""

from __future__ import annotations

import json
import random
import types

import numpy as np
import pytest

import rngvault
from rngvault import _probes
from rngvault.families import _torch

torch = pytest.importorskip("torch", reason="torch is not installed")


def _states() -> dict[str, rngvault.State]:
    generators = {
        "py": random.Random(1),
        "legacy": np.random.RandomState(2),
        "pcg": np.random.default_rng(3),
        "philox": np.random.Generator(np.random.Philox(4)),
        "torch": torch.Generator().manual_seed(5),
    }
    return dict(rngvault.capture(generators, include_globals=False).states)


def test_probes_are_the_generators_next_draws_and_touch_nothing() -> None:
    """A probe equals what the live generator draws next; computing it does not move it."""
    rng = random.Random(1)
    states = rngvault.capture({"py": rng}, include_globals=False).states
    probe = _probes.compute(states)["py"]
    assert probe[:2] == [rng.random(), rng.random()]


def test_probes_cover_every_family_here() -> None:
    """Each family present gets a probe, and probes differ between generators."""
    probes = _probes.compute(_states())
    assert set(probes) == {"py", "legacy", "pcg", "philox", "torch"}
    assert len({tuple(p) for p in probes.values()}) == 5


def test_check_tells_ok_from_differs() -> None:
    """check() is "ok" for faithful probes and "differs" (with both values) otherwise."""
    states = _states()
    probes = _probes.compute(states)
    assert set(_probes.check(states, probes).values()) == {"ok"}
    wrong = dict(probes, pcg=[0.0, 0.0, 0.0, 0])
    verdicts = _probes.check(states, wrong)
    assert verdicts["pcg"].startswith("differs: recorded [0.0, 0.0, 0.0, 0]")
    assert _probes.check(states, {})["py"] == "no probe recorded"


def test_cuda_probes_run_on_their_own_device_only_where_it_has_a_context(monkeypatch) -> None:
    """A CUDA generator is probed under its own device, and only if this process already
    has a context there: probing never creates one (on device 0, from the writer thread)."""
    entered: list[int] = []
    drawn: list[str] = []

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def __enter__(self) -> None:
            entered.append(self.index)

        def __exit__(self, *exc_info: object) -> None:
            pass

    def fake_torch(contexts: object) -> types.SimpleNamespace:
        cuda = types.SimpleNamespace(
            is_initialized=lambda: True, device=Device, device_count=lambda: 3
        )
        return types.SimpleNamespace(cuda=cuda, _C=contexts)

    def draws(state: bytes, device: str) -> list[float]:
        drawn.append(device)
        return [0.5]

    monkeypatch.setattr(_torch, "draws", draws)
    state = rngvault.State("torch.cuda", {"state": bytes(16)})
    # "mine" is on device 1; "any" was made with device="cuda" (no index): any device with a
    # context; "on_2" is on device 2, which has none.
    states = {"torch.cuda:0": state, "torch.cuda:1": state, "mine": state, "any": state}
    states["on_2"] = state
    only_1 = types.SimpleNamespace(_cuda_hasPrimaryContext=lambda index: index == 1)
    monkeypatch.setattr(_torch, "loaded", lambda: fake_torch(only_1))
    devices = {"torch.cuda:0": 0, "torch.cuda:1": 1, "mine": 1, "on_2": 2}
    probed = _probes.compute(states, devices)
    assert set(probed) == {"torch.cuda:1", "mine", "any"}
    assert entered == [1, 1, 1] and drawn == ["cuda:1", "cuda:1", "cuda:1"]
    # A torch that cannot say which devices have a context: no CUDA probe at all.
    monkeypatch.setattr(_torch, "loaded", lambda: fake_torch(types.SimpleNamespace()))
    assert _probes.compute(states, devices) == {}


PROBE_ON_OWN_DEVICE = """
import json, sys, tempfile
import torch
import rngvault
torch.cuda.set_device(1)
torch.rand(3, device="cuda:1")  # CUDA in use on device 1 only
g = torch.Generator(device="cuda:1").manual_seed(3)
vault = rngvault.Vault(tempfile.mkdtemp(), run="a/cuda")
vault.track(g, "g")
vault.snapshot("s")
vault.flush()
print(json.dumps({
    "context_on_0": torch._C._cuda_hasPrimaryContext(0),
    "verify": vault.verify("s"),
}))
"""


@pytest.mark.cuda
def test_a_vault_probes_cuda_generators_on_their_device_and_adds_no_context(run_python) -> None:
    """The writer thread probes a device-1 generator on device 1, creates no context on
    device 0, and the probes recorded there verify on the main thread."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    done = run_python(PROBE_ON_OWN_DEVICE)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["context_on_0"] is False
    assert result["verify"]["g"] == "ok" and result["verify"]["torch.cuda:1"] == "ok"


@pytest.mark.cuda
def test_cuda_probes_taken_by_the_writer_verify_on_the_main_thread(tmp_path) -> None:
    """Probes of the default CUDA generator and a CUDA Generator, computed on the writer
    thread, are recorded and equal what the main thread recomputes."""
    torch.cuda.init()
    torch.rand(3, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(11)
    vault = rngvault.Vault(tmp_path, run="a/cuda")
    vault.track(g, "g")
    vault.snapshot("s")
    vault.flush()
    stored = vault.get("s")
    assert {"g", "torch.cuda:0"} <= set(stored.probes)
    verdicts = vault.verify("s")
    assert verdicts["g"] == "ok" and verdicts["torch.cuda:0"] == "ok"


def test_verify_without_torch_says_why_a_torch_generator_cannot_be_checked(
    tmp_path, run_python
) -> None:
    """Where torch cannot be imported, verify says so for each torch generator (and what to
    install), and still checks the others."""
    vault = rngvault.Vault(tmp_path, run="alice/exp")
    vault.track(torch.Generator().manual_seed(1), "torch_gen")
    vault.track(np.random.default_rng(1), "np_gen")
    (tmp_path / "s.msgpack").write_bytes(rngvault.encode(vault.snapshot("s", durable=True)))
    code = """
        import json, sys
        sys.modules["torch"] = None  # as if torch were not installed
        import rngvault
        snapshot = rngvault.decode(open(sys.argv[1], "rb").read())
        checks = rngvault.verify(snapshot)
        print(json.dumps({n: [c.verdict.name, str(c), c.why] for n, c in checks.items()}))
    """
    done = run_python(code, str(tmp_path / "s.msgpack"))
    assert done.returncode == 0, done.stderr
    checks = json.loads(done.stdout)
    assert checks["np_gen"][0] == "OK"
    verdict, text, why = checks["torch_gen"]
    assert verdict == "CANNOT_PROBE"
    assert "torch" in why and "pip install 'rngvault[torch]'" in why
    assert text == f"cannot be probed here: {why}"
