"""The client-side ``Store`` protocol: where a Vault keeps and finds snapshots.

Two implementations: ``LocalStore`` (a directory, the embedded default) and ``HttpStore``
(the rngvault server). Snapshots are immutable: ``put`` of an existing name with identical
bytes is a no-op (so retries are safe), with other bytes a ``ConflictError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rngvault._errors import InvalidNameError, StoreError
from rngvault._names import check_name, split_run
from rngvault._snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot's metadata, as listed by ``Vault.snapshots()``.

    Attributes:
        run: ``"namespace/run"``.
        name: the snapshot's name.
        ranks: the ranks stored under this name.
        created: when rank 0 (or the lowest rank) was taken, seconds since the epoch.
        digest: that rank's states digest.
        size: that rank's encoded size in bytes.
        step, epoch, tags, metrics: from the snapshot's metadata.
        generators: generator name -> family.
        world_size: the world size recorded with the snapshot.
    """

    run: str
    name: str
    ranks: tuple[int, ...]
    created: float
    digest: str
    size: int
    step: int | None = None
    epoch: int | None = None
    tags: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    generators: Mapping[str, str] = field(default_factory=dict)
    world_size: int = 1

    @classmethod
    def of(cls, run: str, name: str, snapshot: Snapshot, size: int) -> SnapshotInfo:
        meta = snapshot.metadata
        return cls(
            run=run,
            name=name,
            ranks=(meta.rank,),
            created=snapshot.created,
            digest=snapshot.digest,
            size=size,
            step=meta.step,
            epoch=meta.epoch,
            tags=meta.tags,
            metrics=dict(meta.metrics),
            generators={n: s.family for n, s in snapshot.states.items()},
            world_size=meta.world_size,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "name": self.name,
            "ranks": list(self.ranks),
            "created": self.created,
            "digest": self.digest,
            "size": self.size,
            "step": self.step,
            "epoch": self.epoch,
            "tags": list(self.tags),
            "metrics": dict(self.metrics),
            "generators": dict(self.generators),
            "world_size": self.world_size,
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "a store") -> SnapshotInfo:
        """The listing entry ``data`` (``to_dict``'s shape), checked: a run, name or rank
        that breaks its rule is an InvalidNameError or StoreError naming ``source`` and the
        bad value, never a KeyError or TypeError. ``created`` is only shown and sorted by:
        a value that is not a number is kept as NaN (shown as "?")."""
        if not isinstance(data, Mapping):
            raise StoreError(f"{source}: a snapshot entry must be a map, not {_show(data)}")
        try:
            run = "/".join(split_run(data.get("run")))
            name = check_name(data.get("name"))
        except InvalidNameError as exc:
            raise InvalidNameError(f"{source}: {exc}") from None

        def field_of(
            key: str, ok: Callable[[Any], bool], what: str, default: Any = _REQUIRED
        ) -> Any:
            value = data.get(key, default)
            if value is _REQUIRED or not ok(value):
                shown = "missing" if value is _REQUIRED else _show(value)
                raise StoreError(
                    f"{source}: snapshot {run}/{name}: {key!r} must be {what}, got {shown}"
                )
            return value

        ranks = field_of("ranks", _ranks_ok, "a list of ranks (integers >= 0)")
        generators = field_of("generators", _str_map, "a map of names to families", {})
        return cls(
            run=run,
            name=name,
            ranks=tuple(ranks),
            created=_when(data.get("created")),
            digest=field_of("digest", _is_str, "a string"),
            size=field_of("size", _count, "a size in bytes"),
            step=field_of("step", _optional_int, "an integer or null", None),
            epoch=field_of("epoch", _optional_int, "an integer or null", None),
            tags=tuple(field_of("tags", _str_list, "a list of strings", ())),
            metrics=dict(field_of("metrics", _is_map, "a map", {})),
            generators=dict(generators),
            world_size=field_of("world_size", _positive, "an integer >= 1", 1),
        )


@dataclass(frozen=True, slots=True)
class StepEntry:
    """One snapshot of a run that has a step, as ``Store.steps()`` lists them.

    Attributes:
        step: the training step the snapshot recorded.
        name: the snapshot's name.
        digest: its states digest (SHA-256 hex of every state together): equal digests,
            equal states.
        state: with ``steps(generator=NAME)``, the SHA-256 hex of that generator's state
            entry (its canonical encoding), or None where the snapshot has no such
            generator; None when no generator was asked for.
    """

    step: int
    name: str
    digest: str
    state: str | None = None


_REQUIRED: Any = object()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: object) -> bool:
    return _is_int(value) and value >= 0  # type: ignore[operator]


def _positive(value: object) -> bool:
    return _is_int(value) and value >= 1  # type: ignore[operator]


def _optional_int(value: object) -> bool:
    return value is None or _is_int(value)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_map(value: object) -> bool:
    return isinstance(value, Mapping)


def _str_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _str_map(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _ranks_ok(value: object) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(map(_count, value))


def _when(value: object) -> float:
    """A listed ``created`` as a float: NaN when it is not a number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an int past the float range
        return math.nan


@runtime_checkable
class Store(Protocol):
    """Where snapshots live. Runs are ``"namespace/run"``; names are already checked."""

    location: str

    def put(self, run: str, name: str, data: bytes, snapshot: Snapshot) -> bool:
        """Store ``data`` (the encoding of ``snapshot``) for its rank.

        Returns True when stored, False when identical bytes were already there; raises
        ConflictError when the name and rank hold other bytes.
        """
        ...

    def get(self, run: str, name: str, rank: int = 0, *, digest: str | None = None) -> bytes:
        """The stored bytes; NotFoundError when the run, name or rank is missing.

        ``digest``, when the caller knows the states digest it expects (a SnapshotRef),
        lets a store answer from a local cache."""
        ...

    def snapshots(self, run: str) -> list[SnapshotInfo]:
        """Every snapshot of ``run``, oldest first; NotFoundError for an unknown run."""
        ...

    def runs(self) -> list[str]:
        """Every run, sorted."""
        ...

    def steps(
        self,
        run: str,
        *,
        rank: int = 0,
        start: int | None = None,
        generator: str | None = None,
    ) -> Iterator[StepEntry]:
        """``rank``'s snapshots of ``run`` that recorded a step, by step (snapshots with
        the same step in the order they were stored), from step ``start`` on; with
        ``generator``, each entry also carries that generator's state hash. NotFoundError
        for an unknown run. Lazy: a caller that stops early reads no further."""
        ...

    def put_record(self, run: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Keep ``record`` (checked: ``rngvault._record.check_record``, a RecordError naming
        the field) as ``run``'s record unless it has one: a record is written once, the
        first one stored is kept. Returns the record the store keeps: the given one (as
        checked) if the run had none, else the one stored before. A run that does not exist
        is created, with no snapshot yet."""
        ...

    def record(self, run: str) -> dict[str, Any]:
        """``run``'s record: ``{}`` for a run without one; NotFoundError for an unknown run."""
        ...

    def flush(self) -> int:
        """Send whatever the store holds back (the HTTP store's spool); returns how many
        snapshots are still held back (0 for a local store)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
