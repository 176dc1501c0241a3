"""The client-side ``Store`` protocol: where a Vault keeps and finds snapshots.

Two implementations: ``LocalStore`` (a directory, the embedded default) and ``HttpStore``
(the rngvault server). Snapshots are immutable: ``put`` of an existing name with identical
bytes is a no-op (so retries are safe), with other bytes a ``ConflictError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
    def from_dict(cls, data: Mapping[str, Any]) -> SnapshotInfo:
        return cls(
            run=data["run"],
            name=data["name"],
            ranks=tuple(data["ranks"]),
            created=data["created"],
            digest=data["digest"],
            size=data["size"],
            step=data.get("step"),
            epoch=data.get("epoch"),
            tags=tuple(data.get("tags", ())),
            metrics=dict(data.get("metrics", {})),
            generators=dict(data.get("generators", {})),
            world_size=data.get("world_size", 1),
        )


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

    def flush(self) -> int:
        """Send whatever the store holds back (the HTTP store's spool); returns how many
        snapshots are still held back (0 for a local store)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
