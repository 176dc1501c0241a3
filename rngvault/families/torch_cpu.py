"""PyTorch's CPU generators: ``torch.default_generator`` and any CPU ``torch.Generator``.

State: the 5056-byte ``CPUGeneratorImplState`` that ``get_state()`` returns, kept as bytes.
Layout (little-endian): initial seed u64 @0, ``left`` i32 @8, ``seeded`` i32 @12, ``next``
u64 @16, the MT19937 key as 624 u64 words @24 (each < 2**32), the double normal cache
(``normal_x``, ``normal_y``, ``normal_rho`` f64 @5016..5039, ``normal_is_valid`` i32 @5040),
then the float normal cache (f32 @5048, valid flag u8 @5052).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from rngvault._errors import StateError
from rngvault.families import Family, Fields, _torch
from rngvault.families import _fields as f

STATE_SIZE = 5056


def accepts(obj: Any) -> bool:
    return _torch.is_generator(obj, "cpu")


def capture(obj: Any) -> Fields:
    return {"state": obj.get_state().numpy().tobytes()}


def parse(state: bytes) -> dict[str, Any]:
    """The fields of a CPU generator state (MT words as a uint32 array)."""
    seed, left, seeded, next_ = struct.unpack_from("<QiiQ", state, 0)
    words = np.frombuffer(state, dtype="<u8", count=624, offset=24)
    normal_valid = struct.unpack_from("<i", state, 5040)[0]
    float_valid = state[5052]
    return {
        "seed": seed,
        "left": left,
        "seeded": seeded,
        "next": next_,
        "words": words,
        "normal_is_valid": normal_valid,
        "float_normal_is_valid": float_valid,
    }


def validate_bytes(state: Any, field: str = "state") -> None:
    """Check a CPU generator state given as bytes (also used for DataLoader generators)."""
    f.blob({field: state}, field, STATE_SIZE)
    p = parse(state)
    if p["seeded"] != 1:
        raise StateError(
            f"seeded flag is {p['seeded']}; torch rejects unseeded states",
            field=f"{field}.seeded",
            value=p["seeded"],
        )
    if not 1 <= p["left"] <= 624:
        raise StateError(
            f"left is {p['left']}, outside 1..624", field=f"{field}.left", value=p["left"]
        )
    if not 0 <= p["next"] <= 624:
        raise StateError(
            f"next is {p['next']}, outside 0..624", field=f"{field}.next", value=p["next"]
        )
    words = p["words"]
    if int(words.max()) >= 2**32:
        raise StateError("an MT19937 word is wider than 32 bits", field=f"{field}.words")
    if not words.any():
        raise StateError(
            "the MT19937 key is all zeros, which never recovers", field=f"{field}.words"
        )
    for name in ("normal_is_valid", "float_normal_is_valid"):
        if p[name] not in (0, 1):
            raise StateError(
                f"{name} is {p[name]}, not 0 or 1", field=f"{field}.{name}", value=p[name]
            )


def validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"state"})
    validate_bytes(f.get(fields, "state"))


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not accepts(obj):
        raise StateError(
            f"a torch CPU generator state cannot be restored into a {type(obj).__name__}"
            + (f" on {obj.device}" if hasattr(obj, "device") else "")
        )


def restore(obj: Any, fields: Mapping[str, Any]) -> None:
    obj.set_state(_torch.to_tensor(fields["state"]))


def describe_bytes(state: bytes) -> str:
    p = parse(state)
    text = f"MT index {625 - p['left']}/624, seed {p['seed']}"
    if p["normal_is_valid"] or p["float_normal_is_valid"]:
        text += ", cached normal"
    return text


def describe(fields: Mapping[str, Any]) -> str:
    return describe_bytes(fields["state"])


FAMILY = Family(
    name="torch.cpu",
    kind="torch.Generator (CPU)",
    accepts=accepts,
    capture=capture,
    validate=validate,
    check_target=check_target,
    restore=restore,
    describe=describe,
)
