"""Guarded access to torch, and the CPU generator state that two families share.

rngvault imports torch only when the process already has. The CPU generator state (what
``torch.Generator.get_state()`` returns on the CPU) is held by the ``torch.cpu`` family and,
for a loader's generators, by the ``dataloader`` family: its layout, checks, position and
distance are defined here, once.

Layout of torch's ``CPUGeneratorImplState`` (5056 bytes, little-endian): initial seed u64
@0, ``left`` i32 @8, ``seeded`` i32 @12, ``next`` u64 @16, the MT19937 key as 624 u64
words @24 (each < 2**32), the double normal cache (``normal_x``, ``normal_y``,
``normal_rho`` f64 @5016..5039, ``normal_is_valid`` i32 @5040), then the float normal
cache (f32 @5048, valid flag u8 @5052).

torch's MT19937 counts down: each draw first decrements ``left`` and twists when it reaches
zero (then reads word 0), else reads word ``next`` and increments it. A state is sound only
when ``next == 625 - left`` (what drawing leaves) or ``left == 1, next == 0`` (what
``manual_seed`` leaves): with any other pair torch reads words that are not the ones an MT19937
index names, past the 624-word key when ``next + left > 625``.
"""

from __future__ import annotations

import struct
import sys
from types import ModuleType
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import MissingExtraError, StateError
from rngvault.families import _fields as f

CPU_STATE_SIZE = 5056
N = 624
_NORMALS = slice(5016, CPU_STATE_SIZE)  # the double and float normal caches
_HEAD = struct.Struct("<QiiQ")


def loaded() -> ModuleType | None:
    """The torch module if this process has imported it, without importing it."""
    return sys.modules.get("torch")


def require(feature: str) -> Any:
    """Import torch, or say which extra provides it."""
    try:
        import torch
    except ImportError:
        raise MissingExtraError("torch", "torch", feature) from None
    return torch


def is_generator(obj: Any, device_type: str) -> bool:
    torch = loaded()
    return torch is not None and isinstance(obj, torch.Generator) and obj.device.type == device_type


def to_tensor(data: bytes) -> Any:
    torch = require("restoring a torch generator")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


# -- the CPU generator state ------------------------------------------------------------------


def parse_cpu(state: bytes) -> dict[str, Any]:
    """The fields of a CPU generator state (MT words as a uint64 array view)."""
    seed, left, seeded, next_ = _HEAD.unpack_from(state, 0)
    return {
        "seed": seed,
        "left": left,
        "seeded": seeded,
        "next": next_,
        "words": np.frombuffer(state, dtype="<u8", count=N, offset=24),
        "normal_is_valid": struct.unpack_from("<i", state, 5040)[0],
        "float_normal_is_valid": state[5052],
    }


def validate_cpu(state: Any, field: str) -> None:
    """Check a CPU generator state given as bytes; ``field`` names it in errors."""
    f.blob({field: state}, field, CPU_STATE_SIZE)
    p = parse_cpu(state)
    if p["seeded"] != 1:
        raise StateError(
            f"seeded flag is {p['seeded']}; torch rejects unseeded states",
            field=f"{field}.seeded",
            value=p["seeded"],
        )
    left, next_ = p["left"], p["next"]
    if not 1 <= left <= N:
        raise StateError(f"left is {left}, outside 1..624", field=f"{field}.left", value=left)
    if next_ != N + 1 - left and not (left == 1 and next_ == 0):
        raise StateError(
            f"next is {next_} with left {left}: torch reads word next and twists after "
            f"left - 1 more outputs, so next must be {N + 1 - left} (or 0 with left 1, as "
            "manual_seed leaves it); any other pair reads words no MT19937 index names",
            field=f"{field}.next",
            value=next_,
        )
    f.mt_words(p["words"], f"{field}.words")
    for name in ("normal_is_valid", "float_normal_is_valid"):
        if p[name] not in (0, 1):
            raise StateError(
                f"{name} is {p[name]}, not 0 or 1", field=f"{field}.{name}", value=p[name]
            )


def cpu_mt(state: bytes) -> tuple[np.ndarray, int]:
    """The MT19937 key (uint32[624]) and index (0..624, 624: twist first) of a valid state."""
    p = parse_cpu(state)
    return p["words"].astype(np.uint32), N + 1 - p["left"]


def cpu_from_mt(key: np.ndarray, index: int, seed: int = 0) -> bytes:
    """A CPU generator state with that MT19937 key and index; normal caches empty.

    torch keeps at most 623 unread words before a twist (``left <= 624``), so index 0 (all
    624 words unread) has no torch equivalent; index 624 is written as ``manual_seed``
    leaves it (left 1, next 0).
    """
    if index == 0:
        raise StateError(
            "MT index 0 (all 624 words unread) has no torch equivalent: torch allows at most "
            "623 unread words before the next twist, so no torch state gives the same stream",
            field="index",
            value=0,
        )
    raw = bytearray(CPU_STATE_SIZE)
    _HEAD.pack_into(raw, 0, seed, N + 1 - index, 1, index % N)
    np.frombuffer(raw, dtype="<u8", count=N, offset=24)[:] = key
    return bytes(raw)


def describe_cpu(state: bytes) -> str:
    p = parse_cpu(state)
    text = f"MT index {N + 1 - p['left']}/624, seed {p['seed']}"
    if p["normal_is_valid"] or p["float_normal_is_valid"]:
        text += ", cached normal"
    return text


def _normals(state: bytes) -> bytes | None:
    p = parse_cpu(state)
    return state[_NORMALS] if p["normal_is_valid"] or p["float_normal_is_valid"] else None


def cpu_distance(a: bytes, b: bytes, limit: int) -> _distance.Moved:
    """How far CPU generator state ``b`` is ahead of ``a``, in 32-bit MT outputs."""
    seed_a, seed_b = parse_cpu(a)["seed"], parse_cpu(b)["seed"]
    if seed_a != seed_b:
        return _distance.Moved("reseeded", detail=f"seed {seed_a} -> {seed_b}")
    cache = (_distance.NORMAL, _normals(a), _normals(b))
    return _distance.mt_moved(cpu_mt(a), cpu_mt(b), limit, cache)


def seeded_cpu_state(seed: int) -> bytes:
    """The state ``torch.Generator().manual_seed(seed)`` has."""
    generator = require("deriving torch states").Generator().manual_seed(seed)
    return bytes(generator.get_state().numpy().tobytes())


def draws(state: bytes, device: str = "cpu") -> list[Any]:
    """The probe draws of a torch generator in ``state``: two uniforms, then a normal."""
    torch = require("probing torch generators")
    generator = torch.Generator(device=device)
    generator.set_state(to_tensor(state))
    rand = torch.rand(2, generator=generator, device=device).tolist()
    normal = torch.randn(1, generator=generator, device=device).tolist()
    return [*rand, *normal]
