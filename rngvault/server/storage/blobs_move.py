"""Moving an existing store's state blobs between its database and an S3 bucket.

``move_out(db, blobs)`` moves every large whole state row (``base`` NULL, ``data`` at least
``BLOB_MIN`` bytes, still in the database) into the bucket: for each batch of ``BATCH``
rows, in one transaction, it uploads the rows' states (checked against their SHA-256 and
decompressed where the row is; an idempotent put by digest, several at once), then sets
their ``data`` to an empty blob, ``how`` to NULL and ``external`` to 1, and commits. A batch
whose upload fails rolls back, so no row ever refers to an object that is not there; an
interrupted move is resumed by running it again (rows already moved are skipped).

``move_in(db, blobs)`` brings them back: it downloads each external row's object, checks it
against the row's SHA-256, writes it back into ``data`` as a put would (compressed where
that is smaller, ``how`` "z") and sets ``external`` to NULL, a batch per transaction. The
objects stay in the bucket: nothing refers to them any more, so a sweep removes them once
they are older than its grace period (or delete the prefix).

Both hold off a blob sweep the way a put does (SQLite: the write lock, for the whole batch;
PostgreSQL: the shared advisory lock a put takes), so a sweep cannot delete an object between
its upload and the commit that refers to it. A server may keep serving meanwhile: the rows
move a batch at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from rngvault._errors import StoreError
from rngvault.server.storage import scheme_of
from rngvault.server.storage.blobs import BLOB_MIN, S3Blobs
from rngvault.server.storage.deltas import whole, whole_row

__all__ = ["BATCH", "Moved", "move_in", "move_out"]

BATCH = 64  # rows per transaction
PARALLEL = 16  # uploads or downloads at once

Direction = Literal["out", "in"]


@dataclass(frozen=True, slots=True)
class Moved:
    """What a move did.

    Attributes:
        states: state rows moved by this run.
        bytes: their states' bytes (uncompressed: as the objects hold them).
        left: rows still to move when it stopped (0 once done).
    """

    states: int
    bytes: int
    left: int


Progress = Callable[[int, int, int], None]  # (moved so far, bytes so far, rows in all)


# -- SQL, per backend: (key, hash, data or how) rows, keyed by the table's primary key


@dataclass(frozen=True, slots=True)
class _Dialect:
    marker: str  # the parameter marker
    length: str  # bytes of a blob column
    key: str  # the states table's key column
    digest: str  # a row's whole SHA-256
    first: Any  # a key before every row's


# SQLite's ``hash`` may be the first 8 bytes of the SHA-256, the rest then in ``sha256``.
_SQLITE = _Dialect("?", "length", "id", "coalesce(sha256, hash)", -1)
_POSTGRES = _Dialect("%s", "octet_length", "hash", "hash", b"")


def _where(d: _Dialect, direction: Direction) -> str:
    if direction == "out":
        return f"base IS NULL AND external IS NULL AND {d.length}(data) >= {d.marker}"
    return "external = 1"


def _count_sql(d: _Dialect, direction: Direction) -> str:
    return f"SELECT count(*) FROM states WHERE {_where(d, direction)}"


def _batch_sql(d: _Dialect, direction: Direction) -> str:
    columns = "data, how" if direction == "out" else "NULL, NULL"
    return (
        f"SELECT {d.key}, {d.digest}, {columns} FROM states WHERE {_where(d, direction)} "
        f"AND {d.key} > {d.marker} ORDER BY {d.key} LIMIT {d.marker}"
    )


def _update_sql(d: _Dialect, direction: Direction) -> str:
    m = d.marker
    if direction == "out":
        return (
            f"UPDATE states SET data = {m}, how = NULL, external = 1 "
            f"WHERE {d.key} = {m} AND external IS NULL AND base IS NULL"
        )
    return (
        f"UPDATE states SET data = {m}, how = {m}, external = NULL "
        f"WHERE {d.key} = {m} AND external = 1"
    )


def _params(direction: Direction, *rest: Any) -> tuple[Any, ...]:
    return (BLOB_MIN, *rest) if direction == "out" else rest


# -- connections, with the lock a put takes


class _Database:
    """A plain connection to the store's database, opened after the schema is migrated."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = scheme_of(url)
        self.dialect = _SQLITE if self.kind == "sqlite" else _POSTGRES
        self._conn: Any = None

    def open(self) -> None:
        from rngvault.server.storage import open_store

        async def migrate() -> None:  # the store's own opening migrates (0006: external)
            store = await open_store(self.url)
            await store.close()

        asyncio.run(migrate())
        if self.kind == "sqlite":
            from rngvault.server.storage.sqlite import connect, parse_url

            self._conn = connect(parse_url(self.url)[0])
        else:
            import psycopg

            from rngvault.server.storage.postgres import connect_args, conninfo

            info = conninfo(self.url)
            try:
                self._conn = psycopg.connect(info, autocommit=True, **connect_args(info))
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to the database: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._errors():
            return list(self._conn.execute(sql, params).fetchall())

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"the database failed: {exc}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                raise StoreError(f"the database failed: {exc}") from None
            raise

    @contextmanager
    def transaction(self) -> Iterator[Callable[[str, Sequence[Any]], int]]:
        """One transaction holding off blob sweeps; yields ``execute(sql, params) -> rows``."""
        conn = self._conn

        def execute(sql: str, params: Sequence[Any]) -> int:
            with self._errors():
                return int(conn.execute(sql, params).rowcount)

        with self._errors():
            if self.kind == "sqlite":
                conn.execute("BEGIN IMMEDIATE")  # the write lock a sweep's check+delete needs
            else:
                from rngvault.server.storage.postgres_sql import BLOB_LOCK

                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (BLOB_LOCK,))
        try:
            yield execute
        except BaseException:
            with self._errors():
                conn.execute("ROLLBACK")
            raise
        with self._errors():
            conn.execute("COMMIT")


# -- moving


async def _gather(jobs: Sequence[Any]) -> list[Any]:
    gate = asyncio.Semaphore(PARALLEL)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def _move(
    db: str,
    blobs: S3Blobs,
    direction: Direction,
    *,
    batch: int,
    progress: Progress | None,
    limit: int | None,
) -> Moved:
    if not 1 <= batch <= 10_000:
        raise StoreError(f"a move's batch is 1 to 10000 rows, not {batch}")
    database = _Database(db)
    database.open()
    d = database.dialect
    moved = size = 0
    after = d.first
    loop = asyncio.new_event_loop()
    try:
        total = int(database.fetch(_count_sql(d, direction), _params(direction))[0][0])
        while limit is None or moved < limit:
            take = batch if limit is None else min(batch, limit - moved)
            with database.transaction() as execute:
                rows = database.fetch(_batch_sql(d, direction), _params(direction, after, take))
                if not rows:
                    break
                after = rows[-1][0]
                if direction == "out":
                    # the object is the state itself: checked, decompressed where it is kept so
                    states = [whole(bytes(h), bytes(data), how) for _, h, data, how in rows]
                    loop.run_until_complete(
                        _gather(
                            [
                                blobs.put_async(bytes(r[1]), s)
                                for r, s in zip(rows, states, strict=True)
                            ]
                        )
                    )
                    for row, state in zip(rows, states, strict=True):
                        if execute(_update_sql(d, "out"), (b"", row[0])):
                            moved, size = moved + 1, size + len(state)
                else:  # objects are checked against their digests as they arrive
                    found = loop.run_until_complete(
                        _gather([blobs.get_async(bytes(row[1])) for row in rows])
                    )
                    for row, state in zip(rows, found, strict=True):
                        kept = whole_row(bytes(row[1]), state)
                        if execute(_update_sql(d, "in"), (kept.data, kept.how, row[0])):
                            moved, size = moved + 1, size + len(state)
            if progress is not None:
                progress(moved, size, total)
        left = int(database.fetch(_count_sql(d, direction), _params(direction))[0][0])
    finally:
        loop.close()
        database.close()
    return Moved(states=moved, bytes=size, left=left)


def move_out(
    db: str,
    blobs: S3Blobs,
    *,
    batch: int = BATCH,
    progress: Progress | None = None,
    limit: int | None = None,
) -> Moved:
    """Move the large whole state rows of the store at ``db`` into ``blobs``.

    Args:
        db: the store's database URL (``sqlite:///...`` or ``postgresql://...``).
        blobs: the bucket.
        batch: rows per transaction.
        progress: called after each batch with (rows moved, bytes moved, rows in all).
        limit: stop after this many rows (None: all of them).

    Raises:
        StoreError: the database failed, or a ``BlobError`` (the bucket did not take an
            object): the batch in flight is rolled back, the batches before stay moved.
    """
    return _move(db, blobs, "out", batch=batch, progress=progress, limit=limit)


def move_in(
    db: str,
    blobs: S3Blobs,
    *,
    batch: int = BATCH,
    progress: Progress | None = None,
    limit: int | None = None,
) -> Moved:
    """Bring the state rows of the store at ``db`` kept in ``blobs`` back into the database,
    each checked against its SHA-256. Arguments as for ``move_out``.

    Raises:
        StoreError: the database failed, or a ``BlobError``: an object is missing, corrupt
            or cannot be read (the batch in flight is rolled back).
    """
    return _move(db, blobs, "in", batch=batch, progress=progress, limit=limit)
