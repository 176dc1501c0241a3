"""Probes: the first few outputs of each generator, computed from a copy of its state.

A snapshot carries them so that a restore on another machine can recompute them and tell
"same state, different numbers" (a library version or platform changed the algorithm)
from a state that was not restored. Probes never touch the live generators.

CUDA generators are probed on their own device (any device, for a generator made with
``device="cuda"`` and no index), and only where this process already has a CUDA context:
a Vault's writer thread would otherwise run on device 0 and create a context there
(hundreds of MiB) in every process of a distributed run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rngvault._snapshot import State, values_equal
from rngvault.families import _torch, get_family


def _python(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    rng = random.Random()
    get_family("python").restore(rng, fields)  # type: ignore[union-attr]
    return [rng.random(), rng.random(), rng.gauss(0.0, 1.0), rng.getrandbits(32)]


def _legacy(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    rng = np.random.RandomState()
    get_family("numpy.legacy").restore(rng, fields)  # type: ignore[union-attr]
    return [
        *rng.random_sample(2).tolist(),
        float(rng.standard_normal()),
        int(rng.randint(0, 2**31)),
    ]


def _bitgen(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    bit_generator = getattr(np.random, fields["bit_generator"])()
    get_family("numpy.bitgen").restore(bit_generator, fields)  # type: ignore[union-attr]
    rng = np.random.Generator(bit_generator)
    return [
        *rng.random(2).tolist(),
        float(rng.standard_normal()),
        int(rng.integers(0, 2**32, dtype=np.uint32)),
    ]


def _torch_draws(state: bytes, device: str) -> list[Any]:
    torch = _torch.require("probing torch generators")
    generator = torch.Generator(device=device)
    generator.set_state(_torch.to_tensor(state))
    rand = torch.rand(2, generator=generator, device=device).tolist()
    normal = torch.randn(1, generator=generator, device=device).tolist()
    return [*rand, *normal]


def _torch_cpu(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    return _torch_draws(fields["state"], "cpu")


def _torch_cuda(fields: Mapping[str, Any], device: int | None) -> list[Any] | None:
    torch = _torch.loaded()
    if torch is None or not torch.cuda.is_initialized():
        return None  # never initialize CUDA just to probe
    has_context = getattr(torch._C, "_cuda_hasPrimaryContext", None)
    if has_context is None:
        return None
    if device is None:
        # A generator made with device="cuda" has no index; its draws do not depend on
        # the device (seed and offset only), so any device with a context will do.
        device = next((i for i in range(torch.cuda.device_count()) if has_context(i)), None)
    if device is None or not has_context(device):
        return None  # never create a context on a device just to probe
    with torch.cuda.device(device):
        return _torch_draws(fields["state"], f"cuda:{device}")


def _dataloader(fields: Mapping[str, Any], _device: int | None) -> list[Any] | None:
    if fields["generator"] is None:
        return None
    torch = _torch.require("probing a DataLoader generator")
    generator = torch.Generator()
    generator.set_state(_torch.to_tensor(fields["generator"]))
    # The draw DataLoader's iter() makes first: the epoch's 64-bit base seed.
    return [int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())]


_PROBES: dict[str, Callable[[Mapping[str, Any], int | None], list[Any] | None]] = {
    "python": _python,
    "numpy.legacy": _legacy,
    "numpy.bitgen": _bitgen,
    "torch.cpu": _torch_cpu,
    "torch.cuda": _torch_cuda,
    "dataloader": _dataloader,
}


def cuda_device(name: str, devices: Mapping[str, int] | None = None) -> int | None:
    """The CUDA device of generator ``name``: from ``devices``, else ``torch.cuda:N``."""
    if devices is not None and name in devices:
        return devices[name]
    if name.startswith("torch.cuda:") and name[11:].isdigit():
        return int(name[11:])
    return None


def compute(
    states: Mapping[str, State], devices: Mapping[str, int] | None = None
) -> dict[str, list[Any]]:
    """Probe values per generator (generators that cannot be probed here are left out).
    ``devices`` names the CUDA device of CUDA generators not called ``torch.cuda:N``."""
    out = {}
    for name, state in states.items():
        probe = _PROBES.get(state.family)
        if probe is None:
            continue
        try:
            values = probe(state.fields, cuda_device(name, devices))
        except Exception:  # e.g. torch missing here: no probe rather than no snapshot
            continue
        if values is not None:
            out[name] = values
    return out


def check(
    states: Mapping[str, State],
    recorded: Mapping[str, Any],
    devices: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Generator -> "ok", "differs: recorded [...], here [...]", or why it was not checked."""
    now = compute({n: s for n, s in states.items() if n in recorded}, devices)
    out = {}
    for name in states:
        if name not in recorded:
            out[name] = "no probe recorded"
        elif name not in now:
            out[name] = "cannot be probed here"
        elif values_equal(list(recorded[name]), list(now[name])):
            out[name] = "ok"
        else:
            out[name] = f"differs: recorded {list(recorded[name])}, here {now[name]}"
    return out
