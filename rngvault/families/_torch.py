"""Guarded access to torch: rngvault imports torch only when the process already has."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from rngvault._errors import MissingExtraError


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
