"""The SQLite write connection and its group commit.

Jobs are queued; each batch of queued jobs is one ``BEGIN IMMEDIATE`` ... ``COMMIT``, so
with synchronous=FULL the cost of an fsync is shared by every write in the batch, and jobs
that arrive while a batch commits go into the next one together. A job's ``run`` returns
only after its transaction committed. A job that raises an rngvault error (a conflict, say)
is rolled back to its savepoint and the batch goes on; an SQLite error (disk full) rolls the
whole batch back, which is then retried one job at a time so that only the failing job fails.
``on_rollback`` is called whenever anything is rolled back (the store's cache of row ids).

Where the work runs: small jobs (a snapshot put) run their statements on the event loop's
thread, and only the ``COMMIT``, which waits for the disk, runs in the writer's own thread.
Every SQLite call releases the GIL, and a thread that wants it back from a busy event loop
waits each time: a put of a dozen statements took about 1.3 ms in a writer thread under
load, against 0.1 ms on the loop. Heavy jobs (deleting a run of many snapshots, large
bodies) run whole in the writer's thread, so they never stall the loop. The connection is
used by one of the two at a time: batches run one after another.

``BEGIN IMMEDIATE`` is tried on the loop without waiting; when another process holds the
write lock, the batch waits for it in the writer's thread instead (up to the connection's
busy timeout).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rngvault._errors import RngVaultError, StoreError
from rngvault.server.storage.base import StoreFullError

T = TypeVar("T")
Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", bool]

_SQLITE_FULL = 13
_SQLITE_BUSY = 5
MAX_BATCH = 256


def map_error(exc: sqlite3.Error) -> StoreError:
    """The rngvault error for an SQLite error (the one place they are translated)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return StoreFullError(f"the database is full, nothing was written: {exc}")
    return StoreError(f"SQLite error: {exc}")


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_BUSY


class Writer:
    """Owns the write connection. ``connect`` runs in the writer's thread; ``start`` and
    ``run`` are called from the event loop."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        busy_timeout: float,
        on_rollback: Callable[[], None] = lambda: None,
    ) -> None:
        self._connect = connect
        self._on_rollback = on_rollback
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rngvault-sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[Job] = []
        self._drain: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions committed, for tests and metrics

    async def start(self) -> None:
        """Open the connection (or raise why not)."""
        self._conn = await self._in_thread(self._connect)
        self._conn.execute("PRAGMA busy_timeout=0")  # the loop never waits for a lock

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T:
        """``fn(connection)`` in the next transaction; returns after that transaction
        committed. ``heavy`` jobs run in the writer's thread instead of on the loop."""
        if self._closed or self._conn is None:
            raise StoreError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future, heavy))
        if self._drain is None:
            # A task of its own: a cancelled request must not cancel a batch mid-commit.
            self._drain = asyncio.create_task(self._run_pending())
        return await future

    async def close(self) -> None:
        """Finish the queued jobs, then close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._drain is not None:
            await self._drain
        if self._conn is not None:
            await self._in_thread(self._conn.close)
        self._thread.shutdown()

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _run_pending(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._run_batch(batch)
        finally:
            self._drain = None

    async def _run_batch(self, batch: list[Job]) -> None:
        conn = self._conn
        assert conn is not None
        heavy = any(job[2] for job in batch)
        outcomes: list[tuple[bool, Any]] = []
        try:
            if heavy or not self._try_begin(conn):
                outcomes = await self._in_thread(self._whole_batch, conn, batch)
            else:
                outcomes = [self._run_job(conn, job[0]) for job in batch]
                await self._in_thread(conn.execute, "COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            await self._rollback(conn)
            if len(batch) > 1:
                for job in batch:
                    await self._run_batch([job])
            elif not batch[0][1].done():
                batch[0][1].set_exception(map_error(exc))
            return
        except BaseException as exc:  # a bug in a job: fail the batch, keep the writer alive
            await self._rollback(conn)
            for _fn, future, _heavy in batch:
                if not future.done():
                    future.set_exception(StoreError(f"write failed: {type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_fn, future, _heavy), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # its request was cancelled; the write stands
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def _rollback(self, conn: sqlite3.Connection) -> None:
        self._on_rollback()
        if conn.in_transaction:
            await self._in_thread(conn.execute, "ROLLBACK")

    @staticmethod
    def _try_begin(conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE without waiting; False when another connection holds the lock."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                return False
            raise
        return True

    def _whole_batch(self, conn: sqlite3.Connection, batch: list[Job]) -> list[tuple[bool, Any]]:
        """In the writer's thread: the batch from BEGIN to COMMIT, waiting for the lock."""
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute("PRAGMA busy_timeout=0")
        outcomes = [self._run_job(conn, job[0]) for job in batch]
        conn.execute("COMMIT")
        return outcomes

    def _run_job(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]
    ) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT job")
        try:
            value = fn(conn)
        except RngVaultError as exc:
            self._on_rollback()
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return False, exc
        conn.execute("RELEASE job")
        return True, value
