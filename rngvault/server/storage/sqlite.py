"""The SQLite backend: WAL, synchronous=FULL, one writer thread, readers on their own connections.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (a plain path works
too). ``?max_page_count=N`` caps the database at N pages, a size quota that answers 507
when reached. ``?reserve_mb=N`` (default 64) is the room kept for deletes.

Room for deletes: deleting needs a little space too (WAL frames, the odd b-tree page), so
writes that add data stop short of full. A put is refused (507) when the free space of the
database's file system would fall below the reserve, and puts may use the page cap less
``min(reserve, cap / 10)``: deletes, retention and vacuum get the whole cap.

Deletes run in batches of ``BATCH`` snapshots (or rank entries), each its own transaction,
so writes to other runs go on between them. Freed pages are reused by later writes;
``vacuum`` returns them to the file system. New databases are created with
``auto_vacuum=INCREMENTAL`` so that ``vacuum`` works in bounded steps while the server
serves; an older database is converted by its first ``vacuum`` (one full ``VACUUM``).
The WAL is checkpointed after large deletes and truncated to ``JOURNAL_LIMIT``.

Blobs in object storage (``open(url, blobs="s3://BUCKET/PREFIX")``): a new whole state of at
least ``BLOB_MIN`` bytes is uploaded by the put's writer job before its transaction commits,
and its row keeps only its digest (``external`` 1). GETs fetch a snapshot's objects together
on the event loop. Deletes leave objects; ``sweep_blobs`` removes those no row refers to once
their last put is older than the grace period, checking and deleting inside writer jobs, so
never between another put's upload and its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from rngvault._errors import StoreError
from rngvault._snapshot import Snapshot
from rngvault.server.storage import migrations, sqlite_sql
from rngvault.server.storage.base import (
    SAMPLE,
    Collected,
    Globs,
    Page,
    RunInfo,
    SnapshotInfo,
    SnapshotKey,
    StepRow,
    Stored,
    StoreFullError,
    check_rules,
    decode_cursor,
    globs,
    run_page,
    snapshot_page,
    step_cursor,
    step_page,
)
from rngvault.server.storage.blobs import BLOB_MIN, GRACE, S3Blobs
from rngvault.server.storage.content import SameStates, prepare, settle
from rngvault.server.storage.deltas import Bases
from rngvault.server.storage.writer import Writer, log, map_error

T = TypeVar("T")
READERS = 8
BUSY_TIMEOUT = 30.0  # seconds to wait for a lock another process holds
INLINE_PUT = 256 * 1024  # larger bodies are written from the writer's thread,
INLINE_STATES = 256  # and so are snapshots with more states (one insert each)
FREE_RECHECK = 1.0  # seconds puts go on counting down free space without looking again,
# while it stays above twice the reserve
BATCH = 500  # snapshots (and rank entries) one delete transaction removes at most
VACUUM_STEP = 2048  # pages one incremental vacuum transaction returns
JOURNAL_LIMIT = 16 * 1024 * 1024  # bytes the WAL file is truncated to after a checkpoint
RESERVE_MB = 64
_OPTIONS = ("max_page_count", "reserve_mb")
SWEEP_BATCH = 500  # objects one sweep job checks and deletes at most


CHECK_TIMEOUT = 1.0  # seconds /healthz waits for the blob store
FETCH_TIMEOUT = 8.0  # seconds a GET waits for its objects, under a client's 10 s timeout


def parse_url(url: str) -> tuple[Path, dict[str, int]]:
    """The database path and options of an SQLite URL."""
    if "://" not in url:
        return Path(url), {}
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or not parts.path.startswith("/") or parts.netloc:
        raise StoreError(f"invalid SQLite URL {url!r}: write sqlite:///path/to/file.db")
    options: dict[str, int] = {}
    for key, values in parse_qs(parts.query).items():
        if key not in _OPTIONS or not values[-1].isdigit():
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
    """A ``Store`` in one SQLite file.

    Attributes:
        path: the database file.
        blobs: the blob store large whole states are kept in (None: all in the database).
        grace: the grace period (seconds) of the sweep ``collect`` runs.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_page_count: int | None = None,
        reserve_mb: int = RESERVE_MB,
        blobs: S3Blobs | None = None,
    ) -> None:
        self.path = path
        self.blobs = blobs
        self.grace = GRACE
        self._max_page_count = max_page_count
        self._reserve = reserve_mb * 1024 * 1024
        self._directory = str(path.parent)
        self._free, self._free_at = 0, -FREE_RECHECK  # free bytes as last seen, and when
        self._put_pages: int | None = None  # the page cap puts run under
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._ids = sqlite_sql.Ids()
        self._bases = Bases()
        self._writer = Writer(self._open_writer, BUSY_TIMEOUT, forget=self._ids.clear)

    def _open_writer(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on new files only
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT}")
            _migrate(conn)
            if self._max_page_count:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                keep = min(self._reserve // page_size, self._max_page_count // 10)
                self._put_pages = self._max_page_count - keep
                conn.execute(f"PRAGMA max_page_count={self._put_pages}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {str(self.path)!r}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot create {str(self.path.parent)!r}: {exc}") from None
        return conn

    @classmethod
    async def open(cls, url: str, *, blobs: str | S3Blobs | None = None) -> SQLiteStore:
        """Open (creating and migrating) the database ``url`` names.

        Args:
            url: ``sqlite:///path.db`` with its options, or a plain path.
            blobs: keep large whole states in this bucket: an ``s3://BUCKET/PREFIX`` URL
                (endpoint and credentials from the ``AWS_*`` environment) or an ``S3Blobs``;
                None keeps every state in the database.
        """
        path, options = parse_url(url)
        store = cls(path, **options, blobs=S3Blobs(blobs) if isinstance(blobs, str) else blobs)
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
        uploads = self.blobs is not None and any(
            len(state) >= BLOB_MIN for state in prepared.blobs.values()
        )
        try:
            return await self._writer.run(
                lambda conn: sqlite_sql.put(
                    conn,
                    key,
                    prepared,
                    self._ids,
                    functools.partial(self._room, conn),
                    snapshot=snapshot,
                    step=snapshot.metadata.step,
                    upload=self._upload if self.blobs is not None else None,
                ),
                # a job that may upload blocks on the network: never on the event loop
                heavy=uploads or len(body) > INLINE_PUT or len(prepared.holes) > INLINE_STATES,
            )
        except SameStates:
            return await settle(self, key, snapshot)

    async def get(self, key: SnapshotKey) -> bytes:
        fetch = self._fetcher()
        return await self._read(lambda conn: sqlite_sql.get(conn, key, self._bases, fetch))

    def _upload(self, objects: Sequence[tuple[bytes, bytes]]) -> None:
        """Store ``objects`` in the blob store, one after another (in the writer's thread:
        uploading them several at once measured no faster, the writer being the bound)."""
        blobs = self.blobs
        assert blobs is not None
        for digest, state in objects:
            blobs.put(digest, state)

    def _fetcher(self) -> sqlite_sql.Fetch | None:
        """For a reader's thread: objects fetched concurrently on this event loop."""
        blobs = self.blobs
        if blobs is None:
            return None
        loop = asyncio.get_running_loop()

        def fetch(digests: Sequence[bytes]) -> Mapping[bytes, bytes]:
            done = asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(blobs.get_many(digests), FETCH_TIMEOUT), loop
            )
            try:
                return done.result()
            except TimeoutError:
                raise StoreError(
                    f"the blob store {blobs.url} did not answer within {FETCH_TIMEOUT:g} s"
                ) from None

        return fetch

    async def ranks(self, namespace: str, run: str, name: str) -> tuple[int, ...]:
        key = SnapshotKey(namespace, run, name, 0)
        return await self._read(lambda conn: sqlite_sql.stored_ranks(conn, key))

    async def list_runs(
        self,
        *,
        namespace: str | None = None,
        pattern: Globs = "*",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[RunInfo]:
        after = decode_cursor(cursor, str, str) if cursor else None
        rows = await self._read(
            lambda conn: sqlite_sql.list_runs(conn, namespace, globs(pattern), after, limit)
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

    async def run_info(self, namespace: str, run: str) -> tuple[RunInfo, str]:
        return await self._read(lambda conn: sqlite_sql.run_info(conn, namespace, run))

    async def put_record(self, namespace: str, run: str, record: str) -> tuple[bool, str]:
        return await self._writer.run(
            lambda conn: sqlite_sql.put_record(
                conn, namespace, run, record, functools.partial(self._room, conn)
            )
        )

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
        after = step_cursor(cursor)
        rows = await self._read(
            lambda conn: sqlite_sql.steps(
                conn, namespace, run, rank, start, generator, after, limit
            )
        )
        return step_page(rows, limit, start)

    def _room(self, conn: sqlite3.Connection, size: int) -> None:
        """StoreFullError unless ``size`` more bytes leave the reserve free: free space on
        the disk plus the database's own free pages (which later writes reuse)."""
        if not self._reserve:
            return
        now = time.monotonic()
        if now - self._free_at < FREE_RECHECK and self._free - size >= 2 * self._reserve:
            self._free -= size  # far from the reserve: count down, look again soon
            return
        try:
            stat = os.statvfs(self._directory)
        except (OSError, AttributeError):  # no statvfs (Windows): SQLite reports a full disk
            return
        free = stat.f_bavail * stat.f_frsize
        self._free, self._free_at = free - size, now
        if free - size >= self._reserve:
            return
        pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        free += pages * conn.execute("PRAGMA page_size").fetchone()[0]
        if free - size < self._reserve:
            raise StoreFullError(
                f"the database's disk has {free // 2**20} MiB free, less than the "
                f"{self._reserve // 2**20} MiB kept for deletes: nothing was written; "
                "delete snapshots or runs, or free disk space"
            )

    def _deleting(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        """``fn`` with the whole page cap: deletes may use the room puts leave."""
        if self._put_pages is None:
            return fn

        def with_reserve(conn: sqlite3.Connection) -> T:
            conn.execute(f"PRAGMA max_page_count={int(self._max_page_count or 0)}")
            try:
                return fn(conn)
            finally:
                conn.execute(f"PRAGMA max_page_count={self._put_pages}")

        return with_reserve

    async def _delete(self, doomed: sqlite_sql.Doomed | None) -> sqlite_sql.Removed:
        """Delete ``doomed`` in batches, each its own transaction; checkpoint after."""
        removed, batches = sqlite_sql.Removed(), 0
        while doomed is not None:
            step = functools.partial(
                sqlite_sql.delete_batch, doomed=doomed, ids=self._ids, limit=BATCH
            )
            done, doomed = await self._writer.run(self._deleting(step), heavy=True)
            removed, batches = removed + done, batches + 1
        if batches > 2:
            await self._checkpoint()
        return removed

    async def _checkpoint(self) -> None:
        """Move the WAL into the database and truncate it, if no reader is in the way (a
        reader's snapshot is never waited for: the WAL is then reused, and truncated to
        ``JOURNAL_LIMIT`` at its next reset)."""

        def checkpoint(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA busy_timeout=100")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

        try:
            await self._writer.run(checkpoint, bare=True)
        except StoreError as exc:  # what was deleted stays deleted; the next one may do it
            log.warning("WAL checkpoint failed: %s", exc)

    async def delete_snapshot(self, namespace: str, run: str, name: str) -> int:
        doomed = await self._writer.run(
            lambda conn: sqlite_sql.doomed_snapshot(conn, namespace, run, name)
        )
        removed = await self._delete(doomed)
        await self._writer.run(lambda conn: sqlite_sql.touch_run(conn, doomed.run_id))
        return removed.ranks

    async def delete_run(self, namespace: str, run: str) -> int:
        doomed = await self._writer.run(lambda conn: sqlite_sql.doomed_run(conn, namespace, run))
        return (await self._delete(doomed)).snapshots

    async def collect(
        self,
        pattern: str,
        *,
        keep_last: int | None = None,
        stored_before: float | None = None,
        namespaces: Globs = "*",
        dry_run: bool = False,
    ) -> Collected:
        check_rules(keep_last, stored_before)
        plan = await self._read(
            lambda conn: sqlite_sql.plan_collect(
                conn, pattern, globs(namespaces), keep_last, stored_before, SAMPLE
            )
        )
        removed = sqlite_sql.Removed(plan.snapshots, plan.ranks, 0)
        objects = 0
        if not dry_run:
            removed = sqlite_sql.Removed()
            for doomed in plan.doomed:
                removed += await self._delete(doomed)
            objects = await self.sweep_blobs(self.grace)
        return Collected(
            runs=plan.runs,
            snapshots=removed.snapshots,
            ranks=removed.ranks,
            blobs=removed.blobs,
            dry_run=dry_run,
            sample=plan.sample,
            objects=objects,
        )

    async def sweep_blobs(self, grace: float = GRACE) -> int:
        """Delete the blob store's objects that no state refers to and that were last put
        more than ``grace`` seconds ago; returns how many (0 without a blob store)."""
        blobs = self.blobs
        if blobs is None:
            return 0
        removed, chunk = 0, []
        async for digest, _modified in blobs.list_older_async(grace):
            chunk.append(digest)
            if len(chunk) >= SWEEP_BATCH:
                removed += await self._sweep(blobs, chunk)
                chunk = []
        if chunk:
            removed += await self._sweep(blobs, chunk)
        return removed

    async def _sweep(self, blobs: S3Blobs, digests: list[bytes]) -> int:
        return await self._writer.run(
            lambda conn: sqlite_sql.sweep_batch(conn, blobs, digests), heavy=True
        )

    async def vacuum(self) -> int:
        before = self._disk_size()
        mode = await self._read(lambda conn: conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        if mode != _INCREMENTAL:
            await self._writer.run(self._deleting(_convert), bare=True)
        else:
            while await self._writer.run(self._deleting(_vacuum_step), bare=True):
                pass
        await self._checkpoint()
        return max(0, before - self._disk_size())

    def _disk_size(self) -> int:
        """Bytes of the database file and its WAL."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    async def count_snapshots(self) -> int:
        return await self._read(sqlite_sql.count_snapshots)

    async def check(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())
        if self.blobs is not None:
            try:
                await asyncio.wait_for(self.blobs.check(), CHECK_TIMEOUT)
            except TimeoutError:
                raise StoreError(
                    f"the blob store {self.blobs.url} did not answer within {CHECK_TIMEOUT:g} s"
                ) from None

    async def close(self) -> None:
        await self._writer.close()
        while not self._readers.empty():
            self._readers.get_nowait().close()


_INCREMENTAL = 2  # PRAGMA auto_vacuum's number for INCREMENTAL


def _convert(conn: sqlite3.Connection) -> None:
    """A full VACUUM that also turns on incremental vacuum (outside a transaction)."""
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")


def _vacuum_step(conn: sqlite3.Connection) -> bool:
    """Return up to ``VACUUM_STEP`` free pages in a transaction of their own (outside one:
    ``execute`` of this pragma returns a single page, only a script runs it to the end);
    True while free pages are left."""
    conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP})")
    return bool(conn.execute("PRAGMA freelist_count").fetchone()[0])


def backup(url: str, target: Path) -> None:
    """Copy a live database to ``target`` with ``VACUUM INTO``: one read transaction, so the
    copy is consistent while the server writes (and never blocks it), and compact (free
    pages are left out). The copy is synced to disk before this returns."""
    path, _options = parse_url(url)
    if not path.exists():
        raise StoreError(f"no SQLite database at {str(path)!r}")
    try:
        source = connect(path)  # query_only would refuse VACUUM INTO; it only reads
        try:
            source.execute("VACUUM INTO ?", (str(target),))
        finally:
            source.close()
        with open(target, "rb+") as copy:
            os.fsync(copy.fileno())
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"backup of {str(path)!r} to {str(target)!r} failed: {exc}") from None
