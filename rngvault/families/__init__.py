"""Generator families: one module per family of random number generators.

Each module defines one ``Family`` with the same five operations:

- ``capture(obj) -> fields``: copy the generator's complete state (the hot path: no more
  than the library's own getstate call and a few attribute reads);
- ``validate(fields)``: check every field, raising ``StateError`` naming the field and value;
- ``check_target(obj, fields)``: check that ``obj`` can take this state (right kind, device);
- ``restore(obj, fields)``: apply a validated state;
- ``describe(fields) -> str``: a one-line summary of the position (MT index, counter, offset).

==================  =========================================================================
family              objects
==================  =========================================================================
``python``          ``random.Random`` (and the ``random`` module's global instance)
``numpy.legacy``    ``numpy.random.RandomState`` (and the global ``np.random`` state)
``numpy.bitgen``    ``numpy.random.Generator`` and every ``BitGenerator``
``torch.cpu``       CPU ``torch.Generator`` (and ``torch.default_generator``)
``torch.cuda``      CUDA ``torch.Generator`` and each device's default generator
``dataloader``      ``torch.utils.data.DataLoader`` (its generator and DistributedSampler)
==================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rngvault._errors import CaptureError

Fields = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """The operations of one generator family.

    Attributes:
        name: the tag stored with each state (``"numpy.bitgen"``).
        accepts: whether an object belongs to this family.
        capture: copy an object's state into plain fields.
        validate: check fields (raises ``StateError``).
        check_target: check that an object can take a validated state (raises ``StateError``).
        restore: apply validated fields to an object.
        describe: a one-line summary of the generator's position.
        kind: the kind of object, for messages (``"random.Random"``).
    """

    name: str
    kind: str
    accepts: Callable[[Any], bool]
    capture: Callable[[Any], Fields]
    validate: Callable[[Mapping[str, Any]], None]
    check_target: Callable[[Any, Mapping[str, Any]], None]
    restore: Callable[[Any, Mapping[str, Any]], None]
    describe: Callable[[Mapping[str, Any]], str]


def _load() -> dict[str, Family]:
    from rngvault.families import (
        dataloader,
        numpy_bitgen,
        numpy_legacy,
        python,
        torch_cpu,
        torch_cuda,
    )

    found = [python, numpy_legacy, numpy_bitgen, torch_cpu, torch_cuda, dataloader]
    return {module.FAMILY.name: module.FAMILY for module in found}


_FAMILIES: dict[str, Family] | None = None


def families() -> dict[str, Family]:
    """Every family by name."""
    global _FAMILIES
    if _FAMILIES is None:
        _FAMILIES = _load()
    return _FAMILIES


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
