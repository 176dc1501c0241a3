"""Diff two snapshots: which generators moved, and by how many draws.

``diff(a, b)`` compares every generator name in either snapshot; ``state_distance(a, b)``
compares one pair of states. Each comparison says how far B is ahead of A, in the
generator's own unit. Each family's ``distance`` (in its module under
``rngvault/families/``) finds it, exactly where the generator allows (PCG jump distances,
Philox counters, CUDA offsets) and by searching the output stream otherwise (MT19937, up
to ``search_limit`` outputs).
docs/diff.md lists the unit and method of each family.

A raw output is one ``random_raw()`` value: what one step of the bit generator yields.

Statuses: ``unchanged`` (same stream position); ``advanced`` (B is ``distance`` outputs
ahead); ``behind`` (B is before A: ``distance`` is negative); ``reseeded`` (B is not on A's
stream: a different seed, seed sequence, PCG increment, Philox key, bit generator or
family); ``missing`` (the name is in one snapshot only); ``unknown`` (B moved, but not within
the search limit of A either way, or a state is invalid). Cached values that are not part
of the stream position (a buffered 32-bit half-word, a cached normal) are named in the
detail; when only they differ, the distance is 0 and the status ``advanced`` if B used A's
cached value, ``unknown`` if B holds one that drawing cannot leave there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rngvault._distance import (
    CUDA_OFFSET,
    EPOCHS,
    MT32,
    RAW64,
    Moved,
    Status,
)
from rngvault._errors import StateError
from rngvault._report import table
from rngvault._snapshot import Snapshot, State
from rngvault.families import get_family

__all__ = [
    "CUDA_OFFSET",
    "DEFAULT_SEARCH_LIMIT",
    "EPOCHS",
    "MT32",
    "RAW64",
    "DiffReport",
    "GeneratorDiff",
    "diff",
    "state_distance",
]

DEFAULT_SEARCH_LIMIT = 10**7


@dataclass(frozen=True, slots=True)
class GeneratorDiff:
    """How one generator differs between snapshot A and snapshot B.

    Attributes:
        name: the generator's name in the snapshots.
        family: its family (``"numpy.bitgen"``...), B's when the two differ.
        status: ``unchanged``, ``advanced``, ``behind``, ``reseeded``, ``missing`` or
            ``unknown`` (see the module docstring).
        distance: how many ``unit`` B is ahead of A (negative when behind); None when it
            cannot be known (``reseeded``, ``missing``, ``unknown``).
        unit: what ``distance`` counts: ``"raw 64-bit outputs"``, ``"32-bit MT outputs"``,
            ``"Philox offset units"`` or ``"sampler epochs"``; empty when there is none.
        detail: why, in words (buffered half-words, cached normals, seeds that differ).
    """

    name: str
    family: str
    status: Status
    distance: int | None = None
    unit: str = ""
    detail: str = ""

    @property
    def changed(self) -> bool:
        """Whether B's stream differs from A's from here on."""
        return self.status != "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "status": self.status,
            "distance": self.distance,
            "unit": self.unit,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        text = f"{self.name} ({self.family}): {self.status}"
        if self.distance is not None:
            text += f" {self.distance} {self.unit}"
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class DiffReport:
    """Per generator, how snapshot B differs from snapshot A; ``print(report)`` is a table.

    Attributes:
        entries: one ``GeneratorDiff`` per generator name in either snapshot, A's names
            first in A's order, then those only in B.
        labels: what to call A and B when printing.
    """

    entries: tuple[GeneratorDiff, ...]
    labels: tuple[str, str] = ("A", "B")

    @property
    def changed(self) -> tuple[GeneratorDiff, ...]:
        """The entries whose status is not ``unchanged``."""
        return tuple(e for e in self.entries if e.changed)

    @property
    def identical(self) -> bool:
        """Whether every generator is at the same stream position in both snapshots."""
        return not self.changed

    def __getitem__(self, name: str) -> GeneratorDiff:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def __iter__(self) -> Iterator[GeneratorDiff]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "entries": [e.to_dict() for e in self.entries]}

    def __str__(self) -> str:
        rows = [("generator", "family", "status", "distance", "unit", "detail")]
        for e in self.entries:
            distance = "-" if e.distance is None else str(e.distance)
            rows.append((e.name, e.family, e.status, distance, e.unit, e.detail))
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        head = f"diff {self.labels[0]} -> {self.labels[1]}: {summary or 'no generators'}"
        return "\n".join([head, *table(rows)]) if self.entries else head


def diff(
    a: Snapshot,
    b: Snapshot,
    *,
    search_limit: int = DEFAULT_SEARCH_LIMIT,
    labels: tuple[str, str] | None = None,
) -> DiffReport:
    """Compare every generator of snapshot ``a`` with the one of the same name in ``b``.

    ``labels`` name the two sides when printed; by default the snapshots' names (with their
    runs when the runs differ), or ``A`` and ``B`` for snapshots that were never stored.

    ``search_limit`` bounds the search for MT19937 generators that moved into another
    block of 624 words (and the stepping that checks SFC64 distances): further apart than
    that, they are ``unknown``. Searching 10**7 outputs takes about 0.1 s per direction.
    """
    for label, snapshot in zip(("A", "B"), (a, b), strict=True):
        if not isinstance(snapshot, Snapshot):
            raise StateError(f"diff compares Snapshots; {label} is a {type(snapshot).__name__}")
    if labels is None:
        labels = _labels(a, b)
    names = list(a.states) + [n for n in b.states if n not in a.states]
    entries = tuple(
        state_distance(a.states.get(n), b.states.get(n), name=n, search_limit=search_limit)
        for n in names
    )
    return DiffReport(entries, labels)


def _labels(a: Snapshot, b: Snapshot) -> tuple[str, str]:
    if a.ref is None or b.ref is None:
        return "A", "B"
    if a.ref.run == b.ref.run:
        return a.ref.name, b.ref.name
    return f"{a.ref.run}/{a.ref.name}", f"{b.ref.run}/{b.ref.name}"


def state_distance(
    a: State | None,
    b: State | None,
    *,
    name: str = "",
    search_limit: int = DEFAULT_SEARCH_LIMIT,
) -> GeneratorDiff:
    """How far state ``b`` is ahead of state ``a`` (one of them may be None: ``missing``)."""
    if type(search_limit) is not int or search_limit < 0:
        raise StateError(
            f"search_limit must be a non-negative int, got {search_limit!r}",
            field="search_limit",
            value=search_limit,
        )
    if a is None or b is None:
        if a is None and b is None:
            raise StateError("nothing to compare: both states are None", generator=name)
        present = a if a is not None else b
        assert present is not None
        where = "A" if b is None else "B"
        return GeneratorDiff(name, present.family, "missing", detail=f"only in {where}")
    moved = _compare(a, b, search_limit)
    return GeneratorDiff(name, b.family, moved.status, moved.distance, moved.unit, moved.detail)


def _compare(a: State, b: State, limit: int) -> Moved:
    if a.family != b.family:
        return Moved("reseeded", detail=f"replaced: A is a {a.family}, B a {b.family} generator")
    family = get_family(a.family)
    if family is None:
        return Moved("unknown", detail=f"unknown family {a.family!r}")
    for label, state in (("A", a), ("B", b)):
        try:
            family.validate(state.fields)
        except StateError as exc:
            return Moved("unknown", detail=f"{label}'s state is invalid: {exc}")
    if a == b:
        return Moved("unchanged", 0, family.unit(a.fields))
    return family.distance(a.fields, b.fields, limit)
