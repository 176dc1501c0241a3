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
from rngvault.families import _torch, get_family

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


# (key, severity, whether only the families that name the key in their ``environment``
# depend on it (else every snapshot does), what it can break)
_GRADES: tuple[tuple[str, Severity, bool, str], ...] = (
    (
        "python",
        "may-break",
        True,
        "random's derived draws (randrange, choice, shuffle, sample) changed across versions",
    ),
    ("implementation", "may-break", True, "Python random's draws"),
    (
        "numpy",
        "may-break",
        True,
        "Generator methods (NumPy promises no bitstream stability for Generator)",
    ),
    ("torch", "may-break", True, "torch draws (no reproducibility promise across versions)"),
    ("cuda", "may-break", True, "CUDA kernels and their draws"),
    ("cudnn", "may-break", True, "cuDNN kernels' numerics"),
    ("devices", "may-break", True, "CUDA numerics on another GPU model"),
    ("os", "may-break", False, "platform-dependent numerics"),
    ("machine", "may-break", False, "platform-dependent numerics"),
    ("flags.cudnn.benchmark", "may-break", False, "cuDNN algorithm choice (nondeterministic)"),
    ("flags.cudnn.deterministic", "may-break", False, "cuDNN determinism"),
    ("flags.deterministic_algorithms", "may-break", False, "deterministic torch kernels"),
    ("flags.deterministic_warn_only", "info", False, "warnings only"),
    ("flags.CUBLAS_WORKSPACE_CONFIG", "may-break", False, "cuBLAS determinism on CUDA"),
    ("flags.PYTHONHASHSEED", "may-break", False, "set and dict-of-str iteration order"),
    ("world_size", "breaks", False, "which states each rank restores"),
)


def _lookup(env: Mapping[str, Any], key: str) -> Any:
    if key.startswith("flags."):
        return (env.get("flags") or {}).get(key[6:], _MISSING)
    return env.get(key)


def compare(
    recorded: Mapping[str, Any], current: Mapping[str, Any], families: Iterable[str]
) -> list[EnvironmentDifference]:
    """Differences between two environments that matter for the given families."""
    depends: set[str] = set()
    for name in families:
        family = get_family(name)
        if family is not None:
            depends |= family.environment
    out = []
    for key, severity, scoped, affects in _GRADES:
        if scoped and key not in depends:
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


# The values CUDA documents for a deterministic cuBLAS workspace; nothing else is ever set.
CUBLAS_VALUES = (":4096:8", ":16:8")
_TORCH_FLAGS = ("cudnn.benchmark", "cudnn.deterministic", "deterministic_algorithms")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 64 else "a big int"
    return text if len(text) <= 40 else text[:37] + "..."


def apply_flags(recorded: Mapping[str, Any]) -> list[str]:
    """Re-apply the recorded determinism flags; returns what was changed or could not be.

    Never raises: a recorded value that is not one the flag can take (a snapshot from
    elsewhere may hold anything) is left alone and named in a note.
    """
    wanted = recorded.get("flags") if isinstance(recorded, Mapping) else None
    if wanted is None:
        return []
    if not isinstance(wanted, Mapping):
        return [f"flags not applied: the recorded flags are a {type(wanted).__name__}, not a map"]
    notes = _apply_torch_flags(wanted)
    cublas = wanted.get("CUBLAS_WORKSPACE_CONFIG")
    if cublas is not None and cublas not in CUBLAS_VALUES:
        notes.append(
            f"CUBLAS_WORKSPACE_CONFIG not set: the recorded value {_short(cublas)} is not one "
            f"CUDA documents ({', '.join(CUBLAS_VALUES)})"
        )
    elif cublas and os.environ.get("CUBLAS_WORKSPACE_CONFIG") != cublas:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
        note = f"set CUBLAS_WORKSPACE_CONFIG={cublas}"
        torch = _torch.loaded()
        if torch is not None and torch.cuda.is_initialized():
            note += " (no effect on a cuBLAS workspace that already exists)"
        notes.append(note)
    hashseed = wanted.get("PYTHONHASHSEED")
    if hashseed != os.environ.get("PYTHONHASHSEED"):
        if not isinstance(hashseed, str) or not (hashseed.isdigit() or hashseed == "random"):
            notes.append(
                "PYTHONHASHSEED was unset when the snapshot was taken"
                if hashseed is None
                else f"the recorded PYTHONHASHSEED {_short(hashseed)} is not a valid value"
            )
        else:
            notes.append(
                f"PYTHONHASHSEED was {hashseed!r} and cannot be changed in a running process: "
                f"start Python with PYTHONHASHSEED={hashseed}"
            )
    return notes


def _apply_torch_flags(wanted: Mapping[str, Any]) -> list[str]:
    """Set torch's determinism flags to the recorded booleans (those that are booleans)."""
    if not any(name in wanted for name in _TORCH_FLAGS):
        return []
    torch = _torch.loaded()
    if torch is None:
        return ["torch flags not applied: torch is not imported in this process"]
    bad = [
        f"{name} ({_short(wanted.get(name))})"
        for name in (*_TORCH_FLAGS, "deterministic_warn_only")
        if name in wanted and not isinstance(wanted[name], bool)
    ]
    if bad:
        listed = ", ".join(bad)
        return [f"torch flags not applied: recorded values that are not true/false: {listed}"]
    applied = []
    if "cudnn.benchmark" in wanted:
        torch.backends.cudnn.benchmark = wanted["cudnn.benchmark"]
        applied.append("cudnn.benchmark")
    if "cudnn.deterministic" in wanted:
        torch.backends.cudnn.deterministic = wanted["cudnn.deterministic"]
        applied.append("cudnn.deterministic")
    if "deterministic_algorithms" in wanted:
        torch.use_deterministic_algorithms(
            wanted["deterministic_algorithms"],
            warn_only=wanted.get("deterministic_warn_only", False),
        )
        applied.append("deterministic_algorithms")
    return [f"re-applied {', '.join(applied)}"]
