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

import numpy as np

from rngvault import _distance
from rngvault._errors import RngVaultWarning, StateError
from rngvault.families import Family, Fields, _torch
from rngvault.families import _fields as f

_KEYS = frozenset({"generator", "sampler_generator", "sampler"})
# Live iterators of each loader rngvault has seen, to warn when a restore comes too late.
_ITERATORS: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()


class LateRestoreWarning(RngVaultWarning):
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
            _torch.validate_cpu(value, key)
    sampler = f.get(fields, "sampler")
    if sampler is not None:
        f.check_keys(sampler, {"seed", "epoch"}, "sampler")
        seed = f.integer(sampler, "seed", -(2**63), 2**64 - 1, "sampler.")
        epoch = f.integer(sampler, "epoch", -(2**63), 2**63 - 1, "sampler.")
        # DistributedSampler shuffles with manual_seed(seed + epoch), which takes this range
        # only: a state outside it fails at the next iter() wherever it is restored.
        if not -(2**63) <= seed + epoch <= 2**64 - 1:
            raise StateError(
                f"seed + epoch is {seed + epoch}, outside the range torch.manual_seed takes "
                "(-2**63..2**64-1), so the sampler could never shuffle",
                field="sampler.epoch",
                value=epoch,
            )


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
    if obj.generator is not None and not _torch.is_generator(obj.generator, "cpu"):
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
        parts.append("generator " + _torch.describe_cpu(fields["generator"]))
    if fields["sampler_generator"] is not None:
        parts.append("sampler generator " + _torch.describe_cpu(fields["sampler_generator"]))
    if fields["sampler"] is not None:
        parts.append(
            f"DistributedSampler seed {fields['sampler']['seed']} "
            f"epoch {fields['sampler']['epoch']}"
        )
    return "; ".join(parts)


def probe(fields: Mapping[str, Any], _device: int | None) -> list[Any] | None:
    if fields["generator"] is None:
        return None
    torch = _torch.require("probing a DataLoader generator")
    generator = torch.Generator()
    generator.set_state(_torch.to_tensor(fields["generator"]))
    # The draw DataLoader's iter() makes first: the epoch's 64-bit base seed.
    return [int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())]


def distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    parts: list[tuple[str, _distance.Moved]] = []
    for key in ("generator", "sampler_generator"):
        gen_a, gen_b = a[key], b[key]
        if gen_a is None and gen_b is None:
            continue
        if gen_a is None or gen_b is None:
            only = "A" if gen_b is None else "B"
            parts.append((key, _distance.Moved("reseeded", detail=f"only {only} has one")))
        else:
            parts.append((key, _torch.cpu_distance(gen_a, gen_b, limit)))
    sampler_a, sampler_b = a["sampler"], b["sampler"]
    if sampler_a is not None or sampler_b is not None:
        if sampler_a is None or sampler_b is None or sampler_a["seed"] != sampler_b["seed"]:
            reseeded = _distance.Moved("reseeded", detail="DistributedSampler seed differs")
            parts.append(("sampler", reseeded))
        else:
            epochs = sampler_b["epoch"] - sampler_a["epoch"]
            parts.append(("sampler", _distance.by_sign(epochs, _distance.EPOCHS)))
    if not parts:
        return _distance.Moved("unchanged", 0, "", "uses the global torch generator")
    status = max((moved.status for _, moved in parts), key=_distance.RANK.__getitem__)
    # The distance comes from the first part with that status: the loader's generator,
    # else the sampler's generator, else the DistributedSampler's epoch.
    lead = next(moved for _, moved in parts if moved.status == status)
    details = []
    for key, moved in parts:
        if key == "sampler" and moved.status != "reseeded":
            text = f"epoch {sampler_a['epoch']} -> {sampler_b['epoch']}" if moved.distance else ""
        elif moved is lead or moved.status == "unchanged":
            text = ""  # the distance column already says it
        else:
            text = moved.status if moved.distance is None else f"{moved.distance} {moved.unit}"
        text = "; ".join(t for t in (text, moved.detail) if t)
        if text:
            details.append(f"{key}: {text}")
    return _distance.Moved(status, lead.distance, lead.unit, "; ".join(details))


def unit(fields: Mapping[str, Any]) -> str:
    if fields["generator"] or fields["sampler_generator"]:
        return _distance.MT32
    return _distance.EPOCHS if fields["sampler"] else ""


def derive(fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    """Fresh generators for the loader (and its sampler); the DistributedSampler is kept."""
    words = seq.generate_state(4, np.uint64)
    out = dict(fields)
    for key, word in (("generator", 1), ("sampler_generator", 2)):
        if out[key] is not None:
            out[key] = _torch.seeded_cpu_state(int(words[word]))
    return out


FAMILY = Family(
    name="dataloader",
    kind="torch.utils.data.DataLoader",
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
    environment=frozenset({"torch"}),
)
