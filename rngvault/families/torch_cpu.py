"""PyTorch's CPU generators: ``torch.default_generator`` and any CPU ``torch.Generator``.

State: the 5056-byte ``CPUGeneratorImplState`` that ``get_state()`` returns, kept as bytes;
its layout and the rule between ``left`` and ``next`` are in ``families/_torch.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import StateError
from rngvault.families import Family, Fields, _torch
from rngvault.families import _fields as f

STATE_SIZE = _torch.CPU_STATE_SIZE
parse = _torch.parse_cpu


def accepts(obj: Any) -> bool:
    return _torch.is_generator(obj, "cpu")


def capture(obj: Any) -> Fields:
    return {"state": obj.get_state().numpy().tobytes()}


def validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"state"})
    _torch.validate_cpu(f.get(fields, "state"), "state")


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not accepts(obj):
        raise StateError(
            f"a torch CPU generator state cannot be restored into a {type(obj).__name__}"
            + (f" on {obj.device}" if hasattr(obj, "device") else "")
        )


def restore(obj: Any, fields: Mapping[str, Any]) -> None:
    obj.set_state(_torch.to_tensor(fields["state"]))


def describe(fields: Mapping[str, Any]) -> str:
    return _torch.describe_cpu(fields["state"])


def probe(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    return _torch.draws(fields["state"])


def distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    return _torch.cpu_distance(a["state"], b["state"], limit)


def unit(_fields: Mapping[str, Any]) -> str:
    return _distance.MT32


def derive(_fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    return {"state": _torch.seeded_cpu_state(int(seq.generate_state(4, np.uint64)[0]))}


def process_globals() -> list[tuple[str, Any]]:
    torch = _torch.loaded()
    return [] if torch is None else [("torch.cpu", torch.default_generator)]


def global_target(name: str) -> tuple[Any, str] | None:
    if name != "torch.cpu":
        return None
    torch = _torch.loaded()
    if torch is None:
        return None, "torch is not imported in this process"
    return torch.default_generator, ""


def to_mt(fields: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    return _torch.cpu_mt(fields["state"])


def from_mt(key: np.ndarray, index: int) -> Fields:
    return {"state": _torch.cpu_from_mt(key, index)}


FAMILY = Family(
    name="torch.cpu",
    kind="torch.Generator (CPU)",
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
    environment=frozenset({"torch"}),
    to_mt=to_mt,
    from_mt=from_mt,
    type_decides=False,
)
