"""PyTorch's CUDA generators: each device's default generator and any CUDA ``torch.Generator``.

State: 16 bytes, the seed (u64 LE) and the Philox offset (u64 LE); the offset grows by 4
per kernel launch, so a valid one is a multiple of 4. torch before 2.1 used an 816-byte
state, which is not supported. Reading a device's state does not synchronize it.

Capturing never initializes CUDA: globals are captured only once the process has done so.
Probing never creates a CUDA context: a Vault's writer thread would otherwise run on
device 0 and create one there (hundreds of MiB) in every process of a distributed run.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import StateError
from rngvault.families import Family, Fields, _torch
from rngvault.families import _fields as f

STATE_SIZE = 16
_GLOBAL_NAME = re.compile(r"torch\.cuda:([0-9]+)")


@dataclass(frozen=True)
class CudaDevice:
    """The default generator of one CUDA device (``torch.cuda:N``)."""

    index: int


def device_count() -> int:
    """Devices this process can see; 0 without torch or CUDA (never initializes CUDA)."""
    torch = _torch.loaded()
    if torch is None or not torch.cuda.is_available():
        return 0
    return int(torch.cuda.device_count())


def device_of(obj: Any) -> int | None:
    """The device index of a CUDA generator target, if it says."""
    if isinstance(obj, CudaDevice):
        return obj.index
    device = getattr(obj, "device", None)
    index = getattr(device, "index", None)
    return index if isinstance(index, int) else None


def accepts(obj: Any) -> bool:
    return isinstance(obj, CudaDevice) or _torch.is_generator(obj, "cuda")


def capture(obj: Any) -> Fields:
    if isinstance(obj, CudaDevice):
        torch = _torch.require("capturing CUDA generators")
        return {"state": torch.cuda.get_rng_state(obj.index).numpy().tobytes()}
    return {"state": obj.get_state().numpy().tobytes()}


def parse(state: bytes) -> tuple[int, int]:
    """The (seed, Philox offset) of a CUDA state."""
    seed, offset = struct.unpack("<QQ", state)
    return seed, offset


def validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"state"})
    state = f.get(fields, "state")
    if isinstance(state, (bytes, bytearray)) and len(state) == 816:
        raise StateError(
            "an 816-byte CUDA state was written by torch < 2.1, which rngvault does not support",
            field="state",
        )
    f.blob(fields, "state", STATE_SIZE)
    _seed, offset = parse(state)
    if offset % 4:
        raise StateError(
            f"Philox offset {offset} is not a multiple of 4", field="state.offset", value=offset
        )


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if isinstance(obj, CudaDevice):
        count = device_count()
        if obj.index >= count:
            raise StateError(f"CUDA device {obj.index} does not exist here ({count} visible)")
        return
    if not accepts(obj):
        raise StateError(
            f"a torch CUDA generator state cannot be restored into a {type(obj).__name__}"
            + (f" on {obj.device}" if hasattr(obj, "device") else "")
        )


def restore(obj: Any, fields: Mapping[str, Any]) -> None:
    state = _torch.to_tensor(fields["state"])
    if isinstance(obj, CudaDevice):
        _torch.require("restoring CUDA generators").cuda.set_rng_state(state, obj.index)
    else:
        obj.set_state(state)


def describe(fields: Mapping[str, Any]) -> str:
    seed, offset = parse(fields["state"])
    return f"Philox offset {offset}, seed {seed}"


def probe(fields: Mapping[str, Any], device: int | None) -> list[Any] | None:
    """Draws on the generator's own device, only where this process has a context there."""
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
        return _torch.draws(fields["state"], f"cuda:{device}")


def distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    seed_a, offset_a = parse(a["state"])
    seed_b, offset_b = parse(b["state"])
    if seed_a != seed_b:
        return _distance.Moved("reseeded", detail=f"seed {seed_a} -> {seed_b}")
    return _distance.by_sign(offset_b - offset_a, _distance.CUDA_OFFSET)


def unit(_fields: Mapping[str, Any]) -> str:
    return _distance.CUDA_OFFSET


def derive(_fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    seed = int(seq.generate_state(4, np.uint64)[0])
    return {"state": struct.pack("<QQ", seed, 0)}


def process_globals() -> list[tuple[str, Any]]:
    """Each device's default generator, once CUDA is initialized (never initializes it)."""
    torch = _torch.loaded()
    if torch is None or not torch.cuda.is_initialized():
        return []
    return [(f"torch.cuda:{i}", CudaDevice(i)) for i in range(torch.cuda.device_count())]


def global_target(name: str) -> tuple[Any, str] | None:
    match = _GLOBAL_NAME.fullmatch(name)
    if match is None:
        return None
    if _torch.loaded() is None:
        return None, "torch is not imported in this process"
    if device_count() == 0:
        return None, "CUDA is not available in this process: CUDA streams will differ"
    return CudaDevice(int(match.group(1))), ""


FAMILY = Family(
    name="torch.cuda",
    kind="torch.Generator (CUDA)",
    accepts=accepts,
    capture=capture,
    validate=validate,
    check_target=check_target,
    restore=restore,
    describe=describe,
    probe=probe,
    distance=distance,
    unit=unit,
    derive=derive,
    process_globals=process_globals,
    global_target=global_target,
    device=device_of,
    environment=frozenset({"torch", "cuda", "cudnn", "devices"}),
    type_decides=False,
)
