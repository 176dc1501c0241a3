"""The SQLite backend: WAL, synchronous=FULL, one writer thread, readers on their own connections.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (a plain path works
too). ``?max_page_count=N`` caps the database at N pages, a size quota that answers 507
when reached.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from rngvault._errors import StoreError
from rngvault._snapshot import Snapshot
from rngvault.server.storage import migrations, sqlite_sql
from rngvault.server.storage.base import (
    Page,
    RunInfo,
    SnapshotInfo,
    SnapshotKey,
    Stored,
    decode_cursor,
    run_page,
    snapshot_page,
)
from rngvault.server.storage.content import prepare
from rngvault.server.storage.writer import Writer, map_error

T = TypeVar("T")
READERS = 8
BUSY_TIMEOUT = 30.0  # seconds to wait for a lock another process holds
INLINE_PUT = 256 * 1024  # larger bodies are written from the writer's thread,
INLINE_STATES = 256  # and so are snapshots with more states (one insert each)


def parse_url(url: str) -> tuple[Path, dict[str, int]]:
    """The database path and options of an SQLite URL."""
    if "://" not in url:
        return Path(url), {}
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or not parts.path.startswith("/") or parts.netloc:
        raise StoreError(f"invalid SQLite URL {url!r}: write sqlite:///path/to/file.db")
    options: dict[str, int] = {}
    for key, values in parse_qs(parts.query).items():
        if key != "max_page_count" or not values[-1].isdigit():
            raise StoreError(f"invalid SQLite URL option {key!r} in {url!r}")
        options[key] = int(values[-1])
    path = parts.path[1:]
    if not path:
        raise StoreError(f"invalid SQLite URL {url!r}: no file name")
    return Path(path), options


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with rngvault's pragmas (autocommit mode: transactions are explicit)."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
    )
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(migrations.SCHEMA_TABLE)
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        for step in migrations.pending(current[0], migrations.load("sqlite")):
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SQLiteStore:
    """A ``Store`` in one SQLite file."""

    def __init__(self, path: Path, *, max_page_count: int | None = None) -> None:
        self.path = path
        self._max_page_count = max_page_count
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._ids = sqlite_sql.Ids()
        self._writer = Writer(self._open_writer, BUSY_TIMEOUT, forget=self._ids.clear)

    def _open_writer(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            if self._max_page_count:
                conn.execute(f"PRAGMA max_page_count={int(self._max_page_count)}")
            _migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {str(self.path)!r}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot create {str(self.path.parent)!r}: {exc}") from None
        return conn

    @classmethod
    async def open(cls, url: str) -> SQLiteStore:
        path, options = parse_url(url)
        store = cls(path, **options)
        await store._writer.start()
        return store

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._read_sync, fn)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            try:
                conn = connect(self.path, readonly=True)
            except sqlite3.Error as exc:
                raise map_error(exc) from None
        try:
            conn.execute("BEGIN")  # one consistent view for every query of fn
            try:
                result = fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise map_error(exc) from None
        except BaseException:
            conn.close()
            raise
        if self._readers.qsize() < READERS:
            self._readers.put(conn)
        else:
            conn.close()
        return result

    async def put(self, key: SnapshotKey, body: bytes, snapshot: Snapshot) -> Stored:
        prepared = prepare(body, snapshot)
        return await self._writer.run(
            lambda conn: sqlite_sql.put(conn, key, prepared, self._ids),
            heavy=len(body) > INLINE_PUT or len(prepared.holes) > INLINE_STATES,
        )

    async def get(self, key: SnapshotKey) -> bytes:
        return await self._read(lambda conn: sqlite_sql.get(conn, key))

    async def list_runs(
        self,
        *,
        namespace: str | None = None,
        pattern: str = "*",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[RunInfo]:
        after = decode_cursor(cursor, str, str) if cursor else None
        rows = await self._read(
            lambda conn: sqlite_sql.list_runs(conn, namespace, pattern, after, limit)
        )
        return run_page(rows, limit)

    async def list_snapshots(
        self, namespace: str, run: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[SnapshotInfo]:
        after = decode_cursor(cursor, int)[0] if cursor else 0
        rows = await self._read(
            lambda conn: sqlite_sql.list_snapshots(conn, namespace, run, after, limit)
        )
        return snapshot_page(rows, limit)

    async def delete_snapshot(self, namespace: str, run: str, name: str) -> int:
        return await self._writer.run(
            lambda conn: sqlite_sql.delete_snapshot(conn, namespace, run, name, self._ids),
            heavy=True,
        )

    async def delete_run(self, namespace: str, run: str) -> int:
        return await self._writer.run(
            lambda conn: sqlite_sql.delete_run(conn, namespace, run, self._ids), heavy=True
        )

    async def count_snapshots(self) -> int:
        return await self._read(sqlite_sql.count_snapshots)

    async def check(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._writer.close()
        while not self._readers.empty():
            self._readers.get_nowait().close()


def backup(url: str, target: Path) -> None:
    """Copy a live database to ``target`` with SQLite's online backup (consistent, no lock)."""
    path, _options = parse_url(url)
    if not path.exists():
        raise StoreError(f"no SQLite database at {str(path)!r}")
    try:
        source = connect(path, readonly=True)
        try:
            dest = sqlite3.connect(target)
            try:
                source.backup(dest, pages=1024)
            finally:
                dest.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {str(path)!r} to {str(target)!r} failed: {exc}") from None
