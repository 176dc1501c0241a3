"""Generator families: one module per family of random number generators.

A family is a unit, as a bit generator is in ``numpy.random``: everything that depends on
what a generator is lives in its module, which fills in one ``Family`` record. The rest of
rngvault iterates the registry (``families()``) and never names a family. Adding a family
is one module and one line in ``_MODULES`` below (or ``register(family)`` at run time).

=================================  =================================================================
family                             objects
=================================  =================================================================
``python``                         ``random.Random`` (and the ``random`` module's global instance)
``numpy.legacy``                   ``numpy.random.RandomState`` (and the global ``np.random`` state)
``numpy.bitgen``                   ``numpy.random.Generator`` and every ``BitGenerator``
``torch.cpu``                      CPU ``torch.Generator`` (and ``torch.default_generator``)
``torch.cuda``                     CUDA ``torch.Generator`` and each device's default generator
``torchdata.stateful_dataloader``  torchdata's ``StatefulDataLoader`` (its own ``state_dict()``)
``dataloader``                     ``torch.utils.data.DataLoader`` (generator, DistributedSampler)
=================================  =================================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rngvault._distance import Distance
from rngvault._errors import CaptureError

Fields = dict[str, Any]
Probe = Callable[[Mapping[str, Any], "int | None"], "list[Any] | None"]


def _no_globals() -> list[tuple[str, Any]]:
    return []


def _no_global_target(name: str) -> tuple[Any, str] | None:
    return None


def _no_device(obj: Any) -> int | None:
    return None


def _no_watch(obj: Any) -> None:
    return None


def _version_1(fields: Mapping[str, Any]) -> int:
    return 1


@dataclass(frozen=True)
class Family:
    """Everything rngvault does with one family of generators.

    Attributes:
        name: the tag stored with each state (``"numpy.bitgen"``).
        kind: the kind of object, for messages (``"random.Random"``).
        accepts: whether an object belongs to this family.
        capture: copy an object's state into plain fields (the training thread's hot path:
            the library's own getstate call and a few attribute reads).
        validate: check fields, raising ``StateError`` naming the field and value. Enforces
            what the generator's implementation relies on, in bounded time.
        check_target: check that an object can take a validated state (``StateError``).
        restore: apply validated fields to an object.
        describe: a one-line, human-readable position (MT index, counter, offset).
        probe: the first few draws of a copy of a generator in this state (the live
            generator is never touched), given the CUDA device of its target or None; None
            when it cannot be probed here.
        distance: how far state B is ahead of state A (``rngvault._distance.Moved``), both
            validated and not equal; searches at most ``limit`` outputs.
        unit: what ``distance`` counts for a state (``"32-bit MT outputs"``).
        derive: a fresh state of the same kind, seeded from a ``SeedSequence`` (states for
            ranks a snapshot did not record).
        process_globals: the process-wide generators of this family that exist now, as
            (name, object); captured with every snapshot.
        global_target: for the name of a process-wide generator of this family, the object
            a state restores into, or (None, why there is none); None for other names.
        device: the CUDA device index of a target object, or None.
        environment: the environment keys (``rngvault._environment``) its draws depend on.
        to_mt: the MT19937 (key uint32[624], index 0..624) of a state, for families that
            run MT19937 (``rngvault.convert``); raises ``StateError`` for other kinds.
        from_mt: fields with that MT19937 key and index, for families that can hold one.
        type_decides: whether ``accepts`` depends on the object's type alone (so the
            family of a type can be cached).
        watch: called when a Vault starts tracking an object, for families that follow
            an object between snapshots (a DataLoader's epochs).
        version: the snapshot format version a state needs (docs/format.md,
            "Versioning"): 1 unless it uses what a later version added.
        max_states: the most states of this family one snapshot holds, for a family whose
            largest states take longer to validate than ``MAX_STATES`` of them may; None:
            only ``MAX_STATES`` applies.
    """

    name: str
    kind: str
    accepts: Callable[[Any], bool]
    capture: Callable[[Any], Fields]
    validate: Callable[[Mapping[str, Any]], None]
    check_target: Callable[[Any, Mapping[str, Any]], None]
    restore: Callable[[Any, Mapping[str, Any]], None]
    describe: Callable[[Mapping[str, Any]], str]
    probe: Probe
    distance: Distance
    unit: Callable[[Mapping[str, Any]], str]
    derive: Callable[[Mapping[str, Any], np.random.SeedSequence], Fields]
    process_globals: Callable[[], Sequence[tuple[str, Any]]] = _no_globals
    global_target: Callable[[str], tuple[Any, str] | None] = _no_global_target
    device: Callable[[Any], int | None] = _no_device
    environment: frozenset[str] = frozenset()
    to_mt: Callable[[Mapping[str, Any]], tuple[np.ndarray, int]] | None = None
    from_mt: Callable[[np.ndarray, int], Fields] | None = None
    type_decides: bool = True
    watch: Callable[[Any], None] = _no_watch
    version: Callable[[Mapping[str, Any]], int] = _version_1
    max_states: int | None = None


# The family modules, in the order their process-wide generators are captured.
_MODULES = (
    "python",
    "numpy_legacy",
    "numpy_bitgen",
    "torch_cpu",
    "torch_cuda",
    "stateful_dataloader",
    "dataloader",
)

_FAMILIES: dict[str, Family] | None = None


def families() -> dict[str, Family]:
    """Every family by name, in registry order."""
    global _FAMILIES
    if _FAMILIES is None:
        found = [importlib.import_module(f"rngvault.families.{m}").FAMILY for m in _MODULES]
        _FAMILIES = {family.name: family for family in found}
    return _FAMILIES


def register(family: Family) -> Family:
    """Add a family (after the built-in ones); its name must be new."""
    if not isinstance(family, Family):
        raise TypeError(f"register() takes a Family, not a {type(family).__name__}")
    registry = families()
    if family.name in registry:
        raise ValueError(f"a family called {family.name!r} is already registered")
    registry[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family added with ``register`` (built-in families stay)."""
    builtin = {importlib.import_module(f"rngvault.families.{m}").FAMILY.name for m in _MODULES}
    if name in builtin:
        raise ValueError(f"{name!r} is a built-in family")
    families().pop(name, None)


def get_family(name: str) -> Family | None:
    """The family called ``name``, or None."""
    return families().get(name)


def family_of(obj: Any) -> Family:
    """The family ``obj`` belongs to, or CaptureError naming what is supported."""
    for family in families().values():
        if family.accepts(obj):
            return family
    kinds = ", ".join(f.kind for f in families().values())
    raise CaptureError(
        f"cannot capture a {type(obj).__module__}.{type(obj).__qualname__}: "
        f"rngvault captures {kinds}"
    )
