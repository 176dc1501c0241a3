"""The ``Store`` protocol: what the server needs from a storage backend, and its result types.

A backend keeps snapshots under ``namespace/run/name`` and a rank, immutably: a second PUT
of the same snapshot (the same states and user metadata, ``rngvault._identity``) is a no-op
that keeps the first bytes, of another snapshot a ``ConflictError``. The contract test suite
(tests/server/storage/test_contract.py) pins the semantics every backend shares.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from rngvault._errors import RngVaultError, StoreError
from rngvault._snapshot import Snapshot

T = TypeVar("T")

__all__ = [
    "Collected",
    "Globs",
    "InvalidCursorError",
    "Page",
    "RunInfo",
    "SnapshotInfo",
    "SnapshotKey",
    "StepRow",
    "Store",
    "StoreFullError",
    "Stored",
    "decode_cursor",
    "encode_cursor",
    "globs",
]

Globs = str | Sequence[str]
"""Namespace globs of ``*`` and ``?``: one, or several of which any may match."""


class StoreFullError(StoreError):
    """The storage has no room left (disk full or size cap); nothing was written."""


class InvalidCursorError(RngVaultError, ValueError):
    """A paging cursor was not made by this store."""


@dataclass(frozen=True, slots=True)
class SnapshotKey:
    """Where one rank's snapshot lives.

    Attributes:
        namespace: the run's namespace (usually a user or team).
        run: the run's name inside the namespace.
        name: the snapshot's name inside the run.
        rank: the process rank whose snapshot this is.
    """

    namespace: str
    run: str
    name: str
    rank: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """The outcome of a put.

    Attributes:
        created: True when the snapshot is new, False when the same snapshot was already
            stored (then ``digest`` and ``size`` are those of the bytes stored first).
        digest: the states digest.
        size: the snapshot's encoded size in bytes.
    """

    created: bool
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot's metadata, as listed (the lowest rank speaks for the snapshot).

    Attributes:
        name: the snapshot's name.
        stored: when the server first stored it (seconds since the epoch).
        created: when it was taken, as the snapshot says.
        ranks: the ranks stored under this name.
        digest: the states digest of the lowest rank.
        size: its encoded size in bytes.
        step: its training step, if any.
        epoch: its epoch, if any.
        metrics: its metrics.
        generators: (generator name, family) pairs, in snapshot order.
        tags: its tags.
        world_size: how many ranks the run had when it was taken.
    """

    name: str
    stored: float
    created: float
    ranks: tuple[int, ...]
    digest: str
    size: int
    step: int | None
    epoch: int | None
    metrics: Mapping[str, Any]
    generators: tuple[tuple[str, str], ...]
    tags: tuple[str, ...] = ()
    world_size: int = 1


@dataclass(frozen=True, slots=True)
class StepRow:
    """One snapshot of a run that recorded a step, as ``Store.steps`` lists them.

    Attributes:
        step: the training step the snapshot recorded.
        name: the snapshot's name.
        digest: its states digest (equal digests: equal states).
        state: with ``steps(generator=NAME)``, the SHA-256 hex of that generator's state
            entry (the hash its blob is stored under), or None where the snapshot has no
            such generator; None when no generator was asked for.
    """

    step: int
    name: str
    digest: str
    state: str | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run, as listed.

    Attributes:
        namespace: its namespace.
        run: its name.
        created: when its first snapshot was stored.
        updated: when a snapshot was last stored in it.
        snapshots: how many snapshot names it holds.
    """

    namespace: str
    run: str
    created: float
    updated: float
    snapshots: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing.

    Attributes:
        items: the page's items.
        next_cursor: pass it back for the next page; None on the last page.
    """

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Collected:
    """What a retention pass (``Store.collect``) deleted, or would delete in a dry run.

    Attributes:
        runs: how many runs matched the pattern.
        snapshots: how many snapshot names were (or would be) deleted.
        ranks: how many rank entries those snapshots held.
        blobs: how many state blobs no snapshot referred to any more and were freed
            (0 in a dry run).
        dry_run: nothing was deleted; the counts say what would have been.
        sample: up to ``SAMPLE`` of the deleted snapshots, as (namespace, run, name), oldest
            first, so that a dry run can show what it would remove.
        objects: how many objects of the blob store the sweep after the deletes removed
            (``Store.sweep_blobs``; 0 without a blob store, and in a dry run).
    """

    runs: int
    snapshots: int
    ranks: int
    blobs: int
    dry_run: bool
    sample: tuple[tuple[str, str, str], ...]
    objects: int = 0


SAMPLE = 100


def globs(patterns: Globs) -> tuple[str, ...]:
    """``patterns`` as a tuple (no pattern matches nothing)."""
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


def check_rules(keep_last: int | None, stored_before: float | None) -> None:
    """ValueError unless ``collect``'s rules make sense: at least one, ``keep_last`` >= 0."""
    if keep_last is None and stored_before is None:
        raise ValueError("collect needs keep_last or stored_before")
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"keep_last must be 0 or more, not {keep_last}")


class Store(Protocol):
    """A storage backend. Methods raise ``NotFoundError``, ``ConflictError``,
    ``StoreFullError``, ``InvalidCursorError`` or ``StoreError``, never a driver's own error."""

    async def put(self, key: SnapshotKey, body: bytes, snapshot: Snapshot) -> Stored:
        """Store ``body`` (already decoded into ``snapshot``) under ``key``; durable on return."""
        ...

    async def get(self, key: SnapshotKey) -> bytes:
        """The exact bytes stored under ``key``."""
        ...

    async def ranks(self, namespace: str, run: str, name: str) -> tuple[int, ...]:
        """The ranks stored under a snapshot's name, in order; NotFoundError without one."""
        ...

    async def list_runs(
        self,
        *,
        namespace: str | None = None,
        pattern: Globs = "*",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[RunInfo]:
        """Runs by (namespace, run) whose namespace matches ``pattern`` (a glob of ``*`` and
        ``?``, or several: runs any of them matches; none matches nothing)."""
        ...

    async def list_snapshots(
        self, namespace: str, run: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[SnapshotInfo]:
        """A run's snapshots in the order they were first stored."""
        ...

    async def run_info(self, namespace: str, run: str) -> tuple[RunInfo, str]:
        """A run as listed, and its record as stored (compact JSON text; ``"{}"`` for a run
        without one). NotFoundError for an unknown run."""
        ...

    async def put_record(self, namespace: str, run: str, record: str) -> tuple[bool, str]:
        """Keep ``record`` (``rngvault._record.record_json`` of a checked record) as the run's
        record unless it has one: a record is written once, the first one stored is kept.
        Returns (whether it was stored now, the record stored). A run that does not exist is
        created, with no snapshot yet, as a first snapshot would create it."""
        ...

    async def steps(
        self,
        namespace: str,
        run: str,
        *,
        rank: int = 0,
        start: int | None = None,
        generator: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[StepRow]:
        """``rank``'s snapshots of a run that recorded a step, by step (the same step: in
        the order they were stored), from step ``start`` on; with ``generator``, each row
        also carries that generator's state hash. NotFoundError for an unknown run."""
        ...

    async def delete_snapshot(self, namespace: str, run: str, name: str) -> int:
        """Delete every rank of a snapshot; returns how many ranks were removed."""
        ...

    async def delete_run(self, namespace: str, run: str) -> int:
        """Delete a run; returns how many snapshots were removed."""
        ...

    async def collect(
        self,
        pattern: str,
        *,
        keep_last: int | None = None,
        stored_before: float | None = None,
        namespaces: Globs = "*",
        dry_run: bool = False,
    ) -> Collected:
        """Retention: in every run whose ``"namespace/run"`` matches ``pattern`` (a glob of
        ``*`` and ``?``) and whose namespace matches ``namespaces`` (the token's patterns:
        one glob, or several of which any may match),
        delete the snapshots that every given rule selects: those beyond the ``keep_last``
        most recently stored of their run, and those stored before ``stored_before`` (seconds
        since the epoch). At least one rule is given. A run left with no snapshots is removed.
        Deletes in bounded batches, each its own transaction, so other requests go on
        meanwhile; frees state blobs no snapshot refers to any more. With a blob store,
        then sweeps it (``sweep_blobs`` with the default grace period)."""
        ...

    async def sweep_blobs(self, grace: float = ...) -> int:
        """Delete the blob store's objects no state refers to any more, once their last put
        is more than ``grace`` seconds old (default ``blobs.GRACE``), so that an object a
        put in flight is about to refer to is never deleted. Returns how many were deleted;
        0 for a store without a blob store."""
        ...

    async def vacuum(self) -> int:
        """Return free space to the operating system; returns the bytes returned (best known)."""
        ...

    async def count_snapshots(self) -> int:
        """How many snapshot names the store holds."""
        ...

    async def check(self) -> None:
        """Raise ``StoreError`` unless the storage answers (the blob store too, if any)."""
        ...

    async def close(self) -> None:
        """Finish queued writes and release connections."""
        ...


def encode_cursor(*parts: str | int) -> str:
    """An opaque cursor holding ``parts`` (the last item's sort key)."""
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _storable(part: object) -> bool:
    """Whether a cursor part can go into a query: an int64, or text that encodes as UTF-8
    (a crafted cursor may hold neither)."""
    if isinstance(part, int):
        return -(2**63) <= part < 2**63
    try:
        str(part).encode()
    except UnicodeEncodeError:
        return False
    return True


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The parts of ``cursor``, checked against ``types``; InvalidCursorError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(types)
        or not all(type(p) is t and _storable(p) for p, t in zip(parts, types, strict=True))
    ):
        raise InvalidCursorError(f"invalid cursor {cursor[:40]!r}: use the next_cursor of a page")
    return tuple(parts)


def run_page(rows: Sequence[RunInfo], limit: int) -> Page[RunInfo]:
    """A page of runs from up to ``limit + 1`` rows (one more means there is a next page)."""
    items = tuple(rows[:limit])
    last = items[-1] if len(rows) > limit else None
    return Page(items, encode_cursor(last.namespace, last.run) if last else None)


def snapshot_page(rows: Sequence[tuple[int, SnapshotInfo]], limit: int) -> Page[SnapshotInfo]:
    """A page of snapshots from up to ``limit + 1`` (position, info) rows."""
    items = tuple(info for _position, info in rows[:limit])
    return Page(items, encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None)


STEP_KEY_MAX = 2**63 - 1
"""The largest step an index column holds: a step past it (msgpack allows up to 2**64 - 1)
is indexed as this, and its true value read from the row's listing metadata; such steps
list after every other, in the order they were stored."""


def step_key(step: int | None) -> int | None:
    """The indexed value of ``step`` (clamped to an int64)."""
    return None if step is None else min(step, STEP_KEY_MAX)


Listed = tuple[int, int, int, str, str]
"""A row of the steps index: (step key, snapshot id, entry id, name, digest)."""


def info_needed(rows: Sequence[Listed], generator: str | None) -> list[int]:
    """The entries whose listing metadata a steps page needs: all of them for a generator's
    position, else only those whose step is past int64."""
    return [row[2] for row in rows if generator is not None or row[0] == STEP_KEY_MAX]


def state_positions(
    rows: Sequence[Listed], infos: Mapping[int, str], generator: str
) -> list[tuple[int, int]]:
    """(entry id, position of ``generator`` among its states) for the rows that have it."""
    known: dict[str, int | None] = {}
    found = []
    for row in rows:
        position = generator_position(infos[row[2]], generator, known)
        if position is not None:
            found.append((row[2], position))
    return found


def step_rows(
    rows: Sequence[Listed], infos: Mapping[int, str], hashes: Mapping[int, str]
) -> list[tuple[int, int, StepRow]]:
    """(step key, snapshot id, row) for ``step_page``; a step past int64 is read from its
    listing metadata."""
    return [
        (
            key,
            snapshot_id,
            StepRow(
                key if key != STEP_KEY_MAX else int(json.loads(infos[entry_id])["step"]),
                name,
                digest,
                hashes.get(entry_id),
            ),
        )
        for key, snapshot_id, entry_id, name, digest in rows
    ]


def generator_position(info: str, generator: str, known: dict[str, int | None]) -> int | None:
    """Where ``generator`` is among the states of a row whose listing metadata is ``info``
    (``content.info_json``), or None. The generators list is the last list-valued key of the
    top level (only tags, of strings, and world size follow it), and a run's rows mostly
    share it: each distinct list is parsed once (``known``)."""
    begin = info.rfind('"generators":[')
    if begin < 0:
        return None
    begin += len('"generators":')
    end = begin + 2 if info.startswith("[]", begin) else info.index("]]", begin) + 2
    segment = info[begin:end]
    if segment not in known:
        names = [pair[0] for pair in json.loads(segment)]
        known[segment] = names.index(generator) if generator in names else None
    return known[segment]


def step_cursor(cursor: str | None) -> tuple[int, int] | None:
    """The (step key, snapshot id) after which a steps page starts."""
    if cursor is None:
        return None
    key, row = decode_cursor(cursor, int, int)
    return key, row


def step_page(
    rows: Sequence[tuple[int, int, StepRow]], limit: int, start: int | None
) -> Page[StepRow]:
    """A page of steps from up to ``limit + 1`` (step key, snapshot id, row) rows; rows past
    ``STEP_KEY_MAX`` before ``start`` are left out (the index cannot tell them apart)."""
    items = tuple(row for key, _id, row in rows[:limit] if start is None or row.step >= start)
    more = len(rows) > limit
    return Page(items, encode_cursor(rows[limit - 1][0], rows[limit - 1][1]) if more else None)
