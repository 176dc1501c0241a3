"""What reproducibility depends on: library versions, platform, devices, determinism flags.

``collect()`` records it with each snapshot; ``compare()`` grades each difference by what it
can break, for the generator families a snapshot holds.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import numpy as np

from rngvault._report import EnvironmentDifference, Severity
from rngvault.families import _torch

ENV_FLAGS = ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
# The differences apply_flags() removes (PYTHONHASHSEED cannot change in a running process).
APPLIED_FLAGS = frozenset(
    {
        "flags.cudnn.benchmark",
        "flags.cudnn.deterministic",
        "flags.deterministic_algorithms",
        "flags.deterministic_warn_only",
        "flags.CUBLAS_WORKSPACE_CONFIG",
    }
)
_MISSING = object()


@cache
def _static() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "numpy": np.__version__,
        "os": platform.system(),
        "machine": platform.machine(),
    }


def _torch_part() -> dict[str, Any]:
    torch = _torch.loaded()
    if torch is None:
        return {}
    part: dict[str, Any] = {
        "torch": torch.__version__.split("+")[0],
        "torch_build": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if torch.cuda.is_initialized():
        part["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        part["devices"] = None  # unknown: naming them would initialize CUDA
    return part


def flags() -> dict[str, Any]:
    """The determinism flags in force now."""
    out: dict[str, Any] = {name: os.environ.get(name) for name in ENV_FLAGS}
    out.update(torch_flags())
    return out


def torch_flags() -> dict[str, Any]:
    """torch's determinism flags (a few attribute reads: cheap enough for the hot path)."""
    out: dict[str, Any] = {}
    torch = _torch.loaded()
    if torch is not None:
        out["cudnn.benchmark"] = bool(torch.backends.cudnn.benchmark)
        out["cudnn.deterministic"] = bool(torch.backends.cudnn.deterministic)
        out["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
        out["deterministic_warn_only"] = bool(torch.is_deterministic_algorithms_warn_only_enabled())
    return out


def collect(*, rank: int = 0, world_size: int = 1, local_rank: int | None = None) -> dict[str, Any]:
    """The environment of this process, as recorded with a snapshot."""
    env = dict(_static())
    env.update(_torch_part())
    env["flags"] = flags()
    env["rank"] = rank
    env["world_size"] = world_size
    if local_rank is not None:
        env["local_rank"] = local_rank
    return env


# (key, severity, families it matters for (None: all), what it can break)
_GRADES: tuple[tuple[str, Severity, frozenset[str] | None, str], ...] = (
    (
        "python",
        "may-break",
        frozenset({"python"}),
        "random's derived draws (randrange, choice, shuffle, sample) changed across versions",
    ),
    ("implementation", "may-break", frozenset({"python"}), "Python random's draws"),
    (
        "numpy",
        "may-break",
        frozenset({"numpy.bitgen"}),
        "Generator methods (NumPy promises no bitstream stability for Generator)",
    ),
    (
        "torch",
        "may-break",
        frozenset({"torch.cpu", "torch.cuda", "dataloader"}),
        "torch draws (no reproducibility promise across versions)",
    ),
    ("cuda", "may-break", frozenset({"torch.cuda"}), "CUDA kernels and their draws"),
    ("cudnn", "may-break", frozenset({"torch.cuda"}), "cuDNN kernels' numerics"),
    ("devices", "may-break", frozenset({"torch.cuda"}), "CUDA numerics on another GPU model"),
    ("os", "may-break", None, "platform-dependent numerics"),
    ("machine", "may-break", None, "platform-dependent numerics"),
    ("flags.cudnn.benchmark", "may-break", None, "cuDNN algorithm choice (nondeterministic)"),
    ("flags.cudnn.deterministic", "may-break", None, "cuDNN determinism"),
    ("flags.deterministic_algorithms", "may-break", None, "deterministic torch kernels"),
    ("flags.deterministic_warn_only", "info", None, "warnings only"),
    ("flags.CUBLAS_WORKSPACE_CONFIG", "may-break", None, "cuBLAS determinism on CUDA"),
    ("flags.PYTHONHASHSEED", "may-break", None, "set and dict-of-str iteration order"),
    ("world_size", "breaks", None, "which states each rank restores"),
)


def _lookup(env: Mapping[str, Any], key: str) -> Any:
    if key.startswith("flags."):
        return (env.get("flags") or {}).get(key[6:], _MISSING)
    return env.get(key)


def compare(
    recorded: Mapping[str, Any], current: Mapping[str, Any], families: Iterable[str]
) -> list[EnvironmentDifference]:
    """Differences between two environments that matter for the given families."""
    present = set(families)
    out = []
    for key, severity, scope, affects in _GRADES:
        if scope is not None and not scope & present:
            continue
        if key not in recorded and not key.startswith("flags."):
            continue  # an older snapshot, or a library it did not have
        a, b = _lookup(recorded, key), _lookup(current, key)
        if a is _MISSING or b is _MISSING:
            continue  # torch's flags, where one side did not have torch imported
        if key == "devices" and (a is None or b is None):
            continue  # CUDA not initialized on one side: the GPUs are unknown, not different
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            if key == "torch" and (a is None or b is None):
                affects = "torch generators cannot be restored without torch"
            out.append(EnvironmentDifference(key, a, b, severity, affects))
    return out


def apply_flags(recorded: Mapping[str, Any]) -> list[str]:
    """Re-apply the recorded determinism flags; returns what was changed or could not be."""
    wanted = recorded.get("flags") or {}
    notes = []
    torch = _torch.loaded()
    if torch is not None and "cudnn.benchmark" in wanted:
        torch.backends.cudnn.benchmark = bool(wanted["cudnn.benchmark"])
        torch.backends.cudnn.deterministic = bool(wanted["cudnn.deterministic"])
        torch.use_deterministic_algorithms(
            bool(wanted["deterministic_algorithms"]),
            warn_only=bool(wanted.get("deterministic_warn_only", False)),
        )
        notes.append("re-applied cudnn.benchmark, cudnn.deterministic, deterministic_algorithms")
    elif "cudnn.benchmark" in wanted:
        notes.append("torch flags not applied: torch is not imported in this process")
    cublas = wanted.get("CUBLAS_WORKSPACE_CONFIG")
    if cublas and os.environ.get("CUBLAS_WORKSPACE_CONFIG") != cublas:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
        note = f"set CUBLAS_WORKSPACE_CONFIG={cublas}"
        if torch is not None and torch.cuda.is_initialized():
            note += " (no effect on a cuBLAS workspace that already exists)"
        notes.append(note)
    hashseed = wanted.get("PYTHONHASHSEED")
    if hashseed != os.environ.get("PYTHONHASHSEED"):
        notes.append(
            f"PYTHONHASHSEED was {hashseed!r} and cannot be changed in a running process: "
            f"start Python with PYTHONHASHSEED={hashseed}"
            if hashseed
            else "PYTHONHASHSEED was unset when the snapshot was taken"
        )
    return notes
