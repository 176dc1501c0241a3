"""PyTorch ``DataLoader``: the generator that fixes each epoch's order, and the position in it.

``iter(loader)`` draws a 64-bit base seed from ``loader.generator`` (or from the global
torch generator when it is None), and a RandomSampler then shuffles with it. Restoring the
generator before ``iter()`` reproduces that epoch's order.

A snapshot taken while an epoch's iterator is running also records where it stands
(``epoch``): the batches it has yielded and the generators' states when it was created.
After a restore, the next ``iter(loader)`` replays that epoch's start from those states
(the same base seed, so the same worker seeds, and the same order), skips the batches
already yielded through the sampler alone (no ``__getitem__`` call), and puts the
generators back where the snapshot left them. Loaders whose order rngvault cannot replay
(an IterableDataset, a sampler of an unknown kind without a generator of its own,
persistent workers) record why instead; the snapshot warns once, and after a restore the
next ``iter()`` starts a new epoch.

State: ``generator`` (a torch CPU state, or None when the loader uses the global generator),
``sampler_generator`` (a RandomSampler's own generator, when it is not the loader's),
``sampler`` (a DistributedSampler's ``seed`` and ``epoch``, else None), and, only while an
epoch is under way, ``epoch``.
"""

from __future__ import annotations

import sys
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import RngVaultWarning, StateError, warn
from rngvault.families import Family, Fields, _torch
from rngvault.families import _fields as f

_KEYS = frozenset({"generator", "sampler_generator", "sampler", "epoch"})
_EPOCH_KEYS = frozenset({"batches", "generator", "sampler_generator", "global", "unsupported"})
_STARTS = ("generator", "sampler_generator", "global")
MAX_REASON = 256  # characters of an ``epoch.unsupported`` reason
# Live iterators of each loader rngvault has seen, to warn when a restore comes too late.
_ITERATORS: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()
# The epoch under way for each loader: (its iterator, by weak reference; the generators'
# states when it was created; why it cannot be replayed, or None).
_EPOCHS: weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, bytes | None], str | None]] = (
    weakref.WeakKeyDictionary()
)
# A restored position the loader's next iter() resumes at (the state's ``epoch`` map).
_PENDING: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
# Loaders already warned about a position they cannot resume at.
_WARNED: weakref.WeakSet[Any] = weakref.WeakSet()


class LateRestoreWarning(RngVaultWarning):
    """A DataLoader was restored while one of its iterators was running."""


class MidEpochWarning(RngVaultWarning):
    """A DataLoader was captured mid-epoch but cannot resume at that position."""


def _data_module() -> Any:
    return sys.modules.get("torch.utils.data")


def accepts(obj: Any) -> bool:
    data = _data_module()
    return data is not None and isinstance(obj, data.DataLoader)


def watch(loader: Any) -> None:
    """Record the iterators ``loader`` creates from now on, and where each epoch starts
    (idempotent). ``Vault.track`` calls it, so the first epoch is seen too."""
    if loader in _ITERATORS:
        return
    why = _wrapped(loader)
    if why is not None and loader not in _WARNED:
        _WARNED.add(loader)
        warn(
            f"rngvault: {why}: a snapshot taken inside an epoch records no position, and "
            "restoring it starts a new epoch; track the loader it wraps instead",
            MidEpochWarning,
        )
    live: weakref.WeakSet[Any] = weakref.WeakSet()
    _ITERATORS[loader] = live
    original = loader._get_iterator

    def _get_iterator() -> Any:
        pending = _PENDING.pop(loader, None)
        why = _unsupported(loader)
        if pending is not None and pending["unsupported"] is None and why is None:
            starts = {key: pending[key] for key in _STARTS}
            iterator = _resume(loader, starts, pending["batches"])
        else:
            starts = {} if why is not None else _starts(loader)
            iterator = original()
        live.add(iterator)
        _EPOCHS[loader] = (weakref.ref(iterator), starts, why)
        return iterator

    loader._get_iterator = _get_iterator


_watch = watch


def running_iterator(loader: Any) -> bool:
    """Whether an iterator of ``loader`` is alive and not exhausted."""
    candidates = list(_ITERATORS.get(loader, ()))
    if getattr(loader, "_iterator", None) is not None:
        candidates.append(loader._iterator)
    return any(_running(iterator) for iterator in candidates)


def _running(iterator: Any) -> bool:
    if iterator is None or getattr(iterator, "_shutdown", False):
        return False
    try:
        return bool(iterator._num_yielded < len(iterator))
    except TypeError:  # an IterableDataset without a length
        return True


def _sampler_generator(loader: Any) -> Any:
    generator = getattr(loader.sampler, "generator", None)
    return None if generator is None or generator is loader.generator else generator


def _distributed(loader: Any) -> bool:
    data = _data_module()
    return data is not None and isinstance(loader.sampler, data.DistributedSampler)


# -- the epoch under way ------------------------------------------------------------------

# torch's samplers, by name in torch.utils.data: whether each draws (from its generator, or
# the global one when it has none). A sampler of another kind is replayable only with a
# torch.Generator of its own.
_KNOWN_SAMPLERS = {
    "SequentialSampler": False,
    "RandomSampler": True,
    "SubsetRandomSampler": True,
    "WeightedRandomSampler": True,
    "DistributedSampler": False,  # shuffles with a generator seeded from seed + epoch
}


def _sampler_kind(loader: Any) -> tuple[bool, bool] | None:
    """(known to torch, draws from the global generator) for the loader's sampler; None for
    a sampler of unknown kind with no torch.Generator of its own."""
    data = _data_module()
    sampler = loader.sampler
    for name, draws in _KNOWN_SAMPLERS.items():
        kind = getattr(data, name, None)
        if kind is not None and type(sampler) is kind:
            return True, draws and getattr(sampler, "generator", None) is None
    if _torch.is_generator(getattr(sampler, "generator", None), "cpu"):
        return False, False
    return None


def _wrapped(loader: Any) -> str | None:
    """Why rngvault cannot see the epochs of a DataLoader subclass that iterates through
    something else (accelerate's DataLoaderShard iterates the loader it wraps, a batch
    ahead), or None."""
    data = _data_module()
    kind = type(loader)
    if kind.__iter__ is not data.DataLoader.__iter__:
        return f"a {kind.__name__} iterates in its own way, so rngvault cannot see its epochs"
    if kind._get_iterator is not data.DataLoader._get_iterator:
        return f"a {kind.__name__} makes its own iterators"
    return None


def _unsupported(loader: Any) -> str | None:
    """Why the loader's epochs cannot be replayed from a position, or None."""
    data = _data_module()
    wrapped = _wrapped(loader)
    if wrapped is not None:
        return wrapped
    if isinstance(loader.dataset, data.IterableDataset):
        return "an IterableDataset cannot be skipped to a position without reading it"
    if loader.num_workers > 0 and loader.persistent_workers:
        return "persistent workers carry their generators from one epoch to the next"
    if loader.num_workers > 0 and not getattr(loader, "in_order", True):
        return "with in_order=False, the batches yielded are not the sampler's first ones"
    if loader.batch_sampler is not None and type(loader.batch_sampler) is not data.BatchSampler:
        return (
            f"the batch sampler {type(loader.batch_sampler).__name__} is not torch's "
            "BatchSampler, so its order cannot be replayed"
        )
    if _sampler_kind(loader) is None:
        return (
            f"the sampler {type(loader.sampler).__name__} has no torch.Generator of its own, "
            "so its order cannot be replayed"
        )
    return None


def _starts(loader: Any) -> dict[str, bytes | None]:
    """The states an epoch's start draws from: the loader's generator (the base seed), the
    sampler's own one, and the global torch generator when either of those draws uses it."""
    torch = sys.modules["torch"]
    generator = loader.generator
    sampler_generator = _sampler_generator(loader)
    kind = _sampler_kind(loader)
    uses_global = generator is None or (kind is not None and kind[1])
    return {
        "generator": None if generator is None else _state(generator),
        "sampler_generator": None if sampler_generator is None else _state(sampler_generator),
        "global": _state(torch.default_generator) if uses_global else None,
    }


def _state(generator: Any) -> bytes:
    return bytes(generator.get_state().numpy().tobytes())


def _iterator_classes() -> tuple[Any, Any]:
    """torch's two DataLoader iterators, each extended to skip batches before its first."""
    global _RESUMED
    if _RESUMED is None:
        module = sys.modules["torch.utils.data.dataloader"]

        def make(base: Any) -> Any:
            def _next_index(self: Any) -> Any:
                if self._rngvault_skip:
                    _skip(self)
                return base._next_index(self)

            return type(f"Resumed{base.__name__}", (base,), {"_next_index": _next_index})

        _RESUMED = (
            make(module._SingleProcessDataLoaderIter),
            make(module._MultiProcessingDataLoaderIter),
        )
    return _RESUMED


_RESUMED: tuple[Any, Any] | None = None


def _skip(iterator: Any) -> None:
    """Draw the batches to skip from the sampler alone (their items are never loaded)."""
    skip, iterator._rngvault_skip = iterator._rngvault_skip, 0
    # Workers take batches in turn: the first one loaded is the one the uninterrupted
    # epoch's turn gave it to (the cycle is made just before the first index is taken).
    cycle = getattr(iterator, "_worker_queue_idx_cycle", None)
    if cycle is not None:
        for _ in range(skip % iterator._num_workers):
            next(cycle)
    for _ in range(skip):
        next(iterator._sampler_iter)


def _resume(loader: Any, starts: Mapping[str, bytes | None], batches: int) -> Any:
    """The loader's iterator for an epoch replayed from ``starts``, past its first
    ``batches``: the generators are set to their epoch-start states, the iterator is made
    (base seed, then the sampler's draws as far as that many batches took them), and the
    generators are put back where the restore left them."""
    torch = sys.modules["torch"]
    targets = {
        "generator": loader.generator,
        "sampler_generator": _sampler_generator(loader),
        "global": torch.default_generator,
    }
    chosen = {key: state for key, state in starts.items() if state is not None}
    used = {key: targets[key] for key in chosen}
    saved = {key: generator.get_state() for key, generator in used.items()}
    single, multi = _iterator_classes()
    cls = single if loader.num_workers == 0 else multi
    try:
        for key, generator in used.items():
            generator.set_state(_torch.to_tensor(chosen[key]))
        if loader.num_workers > 0:
            loader.check_worker_number_rationality()
        iterator = cls.__new__(cls)
        iterator._rngvault_skip = batches  # multi-process: skipped by the first prefetch
        iterator.__init__(loader)
        try:
            if iterator._rngvault_skip:  # one process: no index was taken yet
                _skip(iterator)
        except StopIteration:
            pass
        iterator._num_yielded = batches
    finally:
        for key, generator in used.items():
            generator.set_state(saved[key])
    return iterator


def _epoch(loader: Any) -> dict[str, Any] | None:
    """The ``epoch`` field: the restored position the next iter() resumes at, else the
    epoch under way, else None (between epochs)."""
    pending = _PENDING.get(loader)
    if pending is not None:
        return pending
    found = _EPOCHS.get(loader)
    if found is None:
        return None
    ref, starts, why = found
    iterator = ref()
    if not _running(iterator):
        return None
    if why is not None:
        if loader not in _WARNED:
            _WARNED.add(loader)
            warn(
                f"rngvault: a DataLoader was captured at batch {iterator._num_yielded} of an "
                f"epoch, but {why}: restoring this snapshot starts a new epoch instead",
                MidEpochWarning,
            )
        return {
            "batches": iterator._num_yielded,
            "generator": None,
            "sampler_generator": None,
            "global": None,
            "unsupported": why,
        }
    return {"batches": iterator._num_yielded, **starts, "unsupported": None}


def end_epoch(loader: Any) -> None:
    """Declare the loader's current epoch over although its iterator did not run out (a
    loop that stops after some batches): snapshots then record no position, and the next
    ``iter()`` starts a new epoch, as it does without a restore."""
    _EPOCHS.pop(loader, None)
    _PENDING.pop(loader, None)


def capture(obj: Any) -> Fields:
    _watch(obj)
    generator = obj.generator
    sampler_generator = _sampler_generator(obj)
    sampler = obj.sampler
    fields: Fields = {
        "generator": None if generator is None else generator.get_state().numpy().tobytes(),
        "sampler_generator": None
        if sampler_generator is None
        else sampler_generator.get_state().numpy().tobytes(),
        "sampler": {"seed": sampler.seed, "epoch": sampler.epoch} if _distributed(obj) else None,
    }
    # Only while an epoch is under way, so a loader between epochs encodes as it always has.
    epoch = _epoch(obj) if obj in _EPOCHS or obj in _PENDING else None
    if epoch is not None:
        fields["epoch"] = dict(epoch)
    return fields


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
    if "epoch" in fields:
        _validate_epoch(fields)


def _validate_epoch(fields: Mapping[str, Any]) -> None:
    epoch = fields["epoch"]
    f.check_keys(epoch, _EPOCH_KEYS, "epoch")
    f.integer(epoch, "batches", 0, 2**63 - 1, "epoch.")
    why = f.get(epoch, "unsupported", "epoch.")
    starts = {key: f.get(epoch, key, "epoch.") for key in _STARTS}
    if why is not None:
        if type(why) is not str or not 0 < len(why) <= MAX_REASON:
            raise StateError(
                f"expected nil or a reason of 1 to {MAX_REASON} characters, got {f.show(why)}",
                field="epoch.unsupported",
            )
        for key, value in starts.items():
            if value is not None:
                raise StateError(
                    "a position that cannot be resumed records no generator states",
                    field=f"epoch.{key}",
                )
        return
    for key, value in starts.items():
        if value is not None:
            _torch.validate_cpu(value, f"epoch.{key}")
    # The epoch started from the generators the loader has: the same ones, no others.
    for key in ("generator", "sampler_generator"):
        if (starts[key] is None) != (fields[key] is None):
            has = "has" if fields[key] is not None else "has no"
            raise StateError(
                f"the loader {has} {key.replace('_', ' ')} but its epoch start says otherwise",
                field=f"epoch.{key}",
            )
    if fields["generator"] is None and starts["global"] is None:
        raise StateError(
            "a loader without a generator draws its epoch from the global torch generator, "
            "whose state at the epoch's start is missing",
            field="epoch.global",
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
    epoch = fields.get("epoch")
    if epoch is not None and epoch["unsupported"] is None:
        why = _unsupported(obj)
        if why is not None:
            raise StateError(
                f"the snapshot was taken at batch {epoch['batches']} of an epoch, but the "
                f"target loader cannot resume there: {why}",
                field="epoch",
            )
        if epoch["batches"] > len(obj):
            raise StateError(
                f"the snapshot was taken at batch {epoch['batches']} of an epoch, but the "
                f"target loader has {len(obj)} batches an epoch: not the same data",
                field="epoch.batches",
                value=epoch["batches"],
            )
        kind = _sampler_kind(obj)
        uses_global = obj.generator is None or (kind is not None and kind[1])
        if uses_global != (epoch["global"] is not None):
            raise StateError(
                "the target loader's sampler draws from "
                + ("the global torch generator" if uses_global else "a generator of its own")
                + ", the snapshot's did not: give it the same kind of sampler",
                field="epoch.global",
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
    epoch = fields.get("epoch")
    if epoch is None:
        _PENDING.pop(obj, None)
    else:
        _PENDING[obj] = dict(epoch)  # the next iter() resumes there
    _EPOCHS.pop(obj, None)


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
    epoch = fields.get("epoch")
    if epoch is not None:
        if epoch["unsupported"] is None:
            parts.append(f"at batch {epoch['batches']} of an epoch: the next iter() resumes there")
        else:
            parts.append(
                f"at batch {epoch['batches']} of an epoch, which cannot be resumed "
                f"({epoch['unsupported']}): the next iter() starts a new epoch"
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
    # The position in the epoch is said in words; the draws decide the status.
    position = _position(a.get("epoch"), b.get("epoch"))
    if not parts:
        detail = "; ".join(t for t in ("uses the global torch generator", position) if t)
        return _distance.Moved("unchanged", 0, "", detail)
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
    if position:
        details.append(position)
    return _distance.Moved(status, lead.distance, lead.unit, "; ".join(details))


def _position(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> str:
    """The epoch positions of two states in words, when they differ."""
    if a == b:
        return ""
    batch = ["between epochs" if e is None else f"batch {e['batches']}" for e in (a, b)]
    return f"epoch position: {batch[0]} -> {batch[1]}"


def unit(fields: Mapping[str, Any]) -> str:
    if fields["generator"] or fields["sampler_generator"]:
        return _distance.MT32
    return _distance.EPOCHS if fields["sampler"] else ""


def derive(fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    """Fresh generators for the loader (and its sampler); the DistributedSampler is kept, and
    the derived rank starts a new epoch."""
    words = seq.generate_state(4, np.uint64)
    out = dict(fields)
    out.pop("epoch", None)
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
    watch=watch,
    version=lambda fields: 2 if "epoch" in fields else 1,  # format version 2 added it
)
