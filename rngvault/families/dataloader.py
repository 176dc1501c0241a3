"""PyTorch ``DataLoader``: the generator that fixes each epoch's order.

``iter(loader)`` draws a 64-bit base seed from ``loader.generator`` (or from the global
torch generator when it is None), and a RandomSampler then shuffles with it. Restoring the
generator before ``iter()`` reproduces that epoch's order; once an iterator is running its
order is already fixed, so a restore then warns.

State: ``generator`` (a torch CPU state, or None when the loader uses the global generator),
``sampler_generator`` (a RandomSampler's own generator, when it is not the loader's), and
``sampler`` (a DistributedSampler's ``seed`` and ``epoch``, else None).
"""

from __future__ import annotations

import sys
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

from rngvault._errors import StateError
from rngvault.families import Family, Fields, _torch, torch_cpu
from rngvault.families import _fields as f

_KEYS = frozenset({"generator", "sampler_generator", "sampler"})
# Live iterators of each loader rngvault has seen, to warn when a restore comes too late.
_ITERATORS: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()


class LateRestoreWarning(UserWarning):
    """A DataLoader was restored while one of its iterators was running."""


def _data_module() -> Any:
    return sys.modules.get("torch.utils.data")


def accepts(obj: Any) -> bool:
    data = _data_module()
    return data is not None and isinstance(obj, data.DataLoader)


def _watch(loader: Any) -> None:
    """Record the iterators ``loader`` creates from now on (idempotent)."""
    if loader in _ITERATORS:
        return
    live: weakref.WeakSet[Any] = weakref.WeakSet()
    _ITERATORS[loader] = live
    original = loader._get_iterator

    def _get_iterator() -> Any:
        iterator = original()
        live.add(iterator)
        return iterator

    loader._get_iterator = _get_iterator


def running_iterator(loader: Any) -> bool:
    """Whether an iterator of ``loader`` is alive and not exhausted."""
    candidates = list(_ITERATORS.get(loader, ()))
    if getattr(loader, "_iterator", None) is not None:
        candidates.append(loader._iterator)
    for iterator in candidates:
        if getattr(iterator, "_shutdown", False):
            continue
        try:
            if iterator._num_yielded < len(iterator):
                return True
        except TypeError:  # an IterableDataset without a length
            return True
    return False


def _sampler_generator(loader: Any) -> Any:
    generator = getattr(loader.sampler, "generator", None)
    return None if generator is None or generator is loader.generator else generator


def _distributed(loader: Any) -> bool:
    data = _data_module()
    return data is not None and isinstance(loader.sampler, data.DistributedSampler)


def capture(obj: Any) -> Fields:
    _watch(obj)
    generator = obj.generator
    sampler_generator = _sampler_generator(obj)
    sampler = obj.sampler
    return {
        "generator": None if generator is None else generator.get_state().numpy().tobytes(),
        "sampler_generator": None
        if sampler_generator is None
        else sampler_generator.get_state().numpy().tobytes(),
        "sampler": {"seed": sampler.seed, "epoch": sampler.epoch} if _distributed(obj) else None,
    }


def validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, _KEYS)
    for key in ("generator", "sampler_generator"):
        value = f.get(fields, key)
        if value is not None:
            torch_cpu.validate_bytes(value, key)
    sampler = f.get(fields, "sampler")
    if sampler is not None:
        f.check_keys(sampler, {"seed", "epoch"}, "sampler")
        f.integer(sampler, "seed", -(2**63), 2**64 - 1, "sampler.")
        f.integer(sampler, "epoch", -(2**63), 2**63 - 1, "sampler.")


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not accepts(obj):
        raise StateError(f"a DataLoader state cannot be restored into a {type(obj).__name__}")
    if (fields["generator"] is None) != (obj.generator is None):
        had = (
            "no generator (it used the global torch generator)"
            if fields["generator"] is None
            else "its own generator"
        )
        raise StateError(
            f"the snapshot's DataLoader had {had}; give the target loader the "
            "same kind of generator",
            field="generator",
        )
    if obj.generator is not None and not torch_cpu.accepts(obj.generator):
        raise StateError(
            f"the target loader's generator is on {obj.generator.device}, not the CPU",
            field="generator",
        )
    if (fields["sampler_generator"] is None) != (_sampler_generator(obj) is None):
        raise StateError(
            "the target loader's sampler does not match the snapshot's: one has a "
            "generator of its own and the other not",
            field="sampler_generator",
        )
    if (fields["sampler"] is None) == _distributed(obj):
        raise StateError(
            "the snapshot's loader and the target disagree on using a DistributedSampler",
            field="sampler",
        )


def restore(obj: Any, fields: Mapping[str, Any]) -> None:
    if running_iterator(obj):
        warnings.warn(
            "a DataLoader was restored while one of its iterators is running: that epoch's "
            "order is already fixed; the restore takes effect from the next iter()",
            LateRestoreWarning,
            stacklevel=4,
        )
    if fields["generator"] is not None:
        obj.generator.set_state(_torch.to_tensor(fields["generator"]))
    if fields["sampler_generator"] is not None:
        _sampler_generator(obj).set_state(_torch.to_tensor(fields["sampler_generator"]))
    if fields["sampler"] is not None:
        obj.sampler.seed = fields["sampler"]["seed"]
        obj.sampler.epoch = fields["sampler"]["epoch"]
    _watch(obj)


def describe(fields: Mapping[str, Any]) -> str:
    parts = []
    if fields["generator"] is None:
        parts.append("global torch generator")
    else:
        parts.append("generator " + torch_cpu.describe_bytes(fields["generator"]))
    if fields["sampler_generator"] is not None:
        parts.append("sampler generator " + torch_cpu.describe_bytes(fields["sampler_generator"]))
    if fields["sampler"] is not None:
        parts.append(
            f"DistributedSampler seed {fields['sampler']['seed']} "
            f"epoch {fields['sampler']['epoch']}"
        )
    return "; ".join(parts)


FAMILY = Family(
    name="dataloader",
    kind="torch.utils.data.DataLoader",
    accepts=accepts,
    capture=capture,
    validate=validate,
    check_target=check_target,
    restore=restore,
    describe=describe,
)
