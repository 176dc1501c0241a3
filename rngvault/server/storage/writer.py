"""The SQLite write connection and its group commit.

Jobs are queued; each batch of queued jobs is one ``BEGIN IMMEDIATE`` ... ``COMMIT``, so
with synchronous=FULL the cost of an fsync is shared by every write in the batch, and jobs
that arrive while a batch commits go into the next one together. A job's ``run`` returns
only after its transaction committed. A job that raises an rngvault error (a conflict, say)
is rolled back to its savepoint and the batch goes on; an SQLite error in a job or at
COMMIT (disk full) rolls the whole batch back, which is then retried one job at a time so
that only the failing job fails. When the write lock cannot be had (another process holds
it past the busy timeout) every job of the batch fails at once: nothing of it ran.

Where the work runs: small jobs (a snapshot put) run their statements on the event loop's
thread, and only the ``COMMIT``, which waits for the disk, runs in the writer's own thread.
Every SQLite call releases the GIL, and a thread that wants it back from a busy event loop
waits each time: a put of a dozen statements took about 1.3 ms in a writer thread under
load, against 0.03-0.08 ms for the same statements alone. Heavy jobs (deleting runs and
snapshots, large bodies) run whole in the writer's thread, so they never stall the loop.
The connection is used by one of the two at a time: batches run one after another, and a
call handed to the thread is always waited for, even when the waiting task is cancelled.

``BEGIN IMMEDIATE`` is tried on the loop without waiting; when another process holds the
write lock, the batch waits for it in the writer's thread instead (up to the busy timeout).

``forget`` is called whenever rows the store may have cached can have changed under it:
after a rollback, and when another connection committed since the last batch (SQLite's
``data_version``).

Maintenance that SQLite refuses inside a transaction (``VACUUM``, ``wal_checkpoint``) runs
as a *bare* job: alone, in the writer's thread, outside any transaction, waiting for other
connections' locks up to the busy timeout.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rngvault._errors import RngVaultError, StoreError
from rngvault.server.storage.base import StoreFullError

T = TypeVar("T")
# (function, future, heavy, bare)
Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", bool, bool]

log = logging.getLogger("rngvault.server")
_SQLITE_FULL = 13
_SQLITE_BUSY = 5
MAX_BATCH = 256


FULL_MESSAGE = (
    "the database or its disk is full, nothing was written: "
    "delete snapshots or runs to make room (deletes still work)"
)


def map_error(exc: sqlite3.Error) -> StoreError:
    """The rngvault error for an SQLite error (the one place they are translated). Clients
    see the messages; SQLite's own text of a full disk goes to the log only."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        log.warning("SQLite: %s", exc)
        return StoreFullError(FULL_MESSAGE)
    return StoreError(f"SQLite error: {exc}")


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_BUSY


class _NoLock(Exception):
    """BEGIN IMMEDIATE failed: the batch never started."""

    def __init__(self, cause: sqlite3.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Writer:
    """Owns the write connection. ``connect`` runs in the writer's thread; ``start`` and
    ``run`` are called from the event loop."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        busy_timeout: float,
        forget: Callable[[], None] = lambda: None,
    ) -> None:
        self._connect = connect
        self._forget = forget
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rngvault-sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._pending: list[Job] = []
        self._drain: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions committed, for tests and metrics

    async def start(self) -> None:
        """Open the connection (or raise why not)."""
        self._conn = await self._in_thread(self._connect)
        self._conn.execute("PRAGMA busy_timeout=0")  # the loop never waits for a lock

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, heavy: bool = False, bare: bool = False
    ) -> T:
        """``fn(connection)`` in the next transaction; returns after that transaction
        committed. ``heavy`` jobs run in the writer's thread instead of on the loop; ``bare``
        ones there too, alone and outside any transaction."""
        if self._closed or self._conn is None:
            raise StoreError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future, heavy, bare))
        if self._drain is None or self._drain.done():
            # A task of its own: a cancelled request must not cancel a batch mid-commit.
            self._drain = asyncio.create_task(self._run_pending())
        return await future

    async def close(self) -> None:
        """Finish the queued jobs, then close the connection. Cancelling the wait (a
        shutdown deadline) does not stop that: closing late is better than half a batch."""
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.create_task(self._shut_down())
        await asyncio.shield(self._closing)

    async def _shut_down(self) -> None:
        if self._drain is not None and not self._drain.done():
            await self._drain
        if self._conn is not None:
            await self._in_thread(self._conn.close)
        self._thread.shutdown()

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the writer's thread. If the waiting task is cancelled, the call
        is still waited for (nothing else may touch the connection meanwhile), then the
        cancellation goes on."""
        future = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    async def _run_pending(self) -> None:
        batch: list[Job] = []
        try:
            while self._pending:
                size = next(
                    (i for i, job in enumerate(self._pending[:MAX_BATCH]) if job[3]),
                    MAX_BATCH,
                )
                batch = self._pending[: size or 1]
                del self._pending[: size or 1]
                await (self._run_bare(batch[0]) if size == 0 else self._run_batch(batch))
                batch = []
        finally:
            # Only reached with jobs left when this task was cancelled (the event loop is
            # shutting down without close()): say so rather than leave callers waiting.
            _fail(batch + self._pending, StoreError("the store closed before this write"))
            self._pending.clear()

    async def _run_batch(self, batch: list[Job]) -> None:
        """One transaction for ``batch``; every future is resolved when this returns."""
        try:
            outcomes = await self._transaction(batch)
        except _NoLock as exc:
            _fail(batch, map_error(exc.cause))
            return
        except sqlite3.Error as exc:
            await self._rollback()
            if len(batch) == 1:
                _fail(batch, map_error(exc))
                return
            for i, job in enumerate(batch):
                try:
                    outcome = await self._transaction([job])
                except _NoLock as busy:  # the rest would wait for the lock in vain too
                    _fail(batch[i:], map_error(busy.cause))
                    return
                except sqlite3.Error as alone:
                    await self._rollback()
                    _fail([job], map_error(alone))
                else:
                    _resolve([job], outcome)
            return
        except BaseException as exc:  # a bug in a job, or cancelled: keep the writer usable
            await self._rollback()
            _fail(batch, StoreError(f"write failed: {type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
            return
        _resolve(batch, outcomes)

    async def _run_bare(self, job: Job) -> None:
        conn = self._conn
        assert conn is not None
        try:
            outcome = await self._in_thread(self._bare_job, conn, job[0])
        except sqlite3.Error as exc:
            await self._rollback()
            _fail([job], map_error(exc))
        except RngVaultError as exc:
            await self._rollback()
            _fail([job], exc)
        except BaseException as exc:
            await self._rollback()
            _fail([job], StoreError(f"maintenance failed: {type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
        else:
            _resolve([job], [(True, outcome)])

    def _bare_job(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """In the writer's thread, outside a transaction; what it changes may move rows."""
        self._forget()
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        try:
            return fn(conn)
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    async def _transaction(self, batch: list[Job]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        if any(job[2] for job in batch) or not self._try_begin(conn):
            outcomes = await self._in_thread(self._whole_batch, conn, batch)
        else:
            outcomes = [self._run_job(conn, job[0]) for job in batch]
            await self._in_thread(conn.execute, "COMMIT")
        self.commits += 1
        return outcomes

    async def _rollback(self) -> None:
        self._forget()
        conn = self._conn
        if conn is not None and conn.in_transaction:
            try:
                await self._in_thread(conn.execute, "ROLLBACK")
            except sqlite3.Error as exc:  # the transaction is gone either way
                log.error("SQLite rollback failed: %s", exc)

    def _try_begin(self, conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE without waiting; False when another connection holds the lock."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                return False
            raise _NoLock(exc) from None
        self._check_data_version(conn)
        return True

    def _whole_batch(self, conn: sqlite3.Connection, batch: list[Job]) -> list[tuple[bool, Any]]:
        """In the writer's thread: the batch from BEGIN to COMMIT, waiting for the lock."""
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _NoLock(exc) from None
        finally:
            conn.execute("PRAGMA busy_timeout=0")
        self._check_data_version(conn)
        outcomes = [self._run_job(conn, job[0]) for job in batch]
        conn.execute("COMMIT")
        return outcomes

    def _check_data_version(self, conn: sqlite3.Connection) -> None:
        """Inside the transaction: if another connection committed since our last batch,
        what the store remembers about rows may be stale."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._forget()
            self._data_version = version

    def _run_job(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]
    ) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT job")
        try:
            value = fn(conn)
        except RngVaultError as exc:
            self._forget()
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return False, exc
        conn.execute("RELEASE job")
        return True, value


def _resolve(batch: list[Job], outcomes: list[tuple[bool, Any]]) -> None:
    for (_fn, future, _heavy, _bare), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():  # its request was cancelled; the write stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _fail(batch: list[Job], error: Exception) -> None:
    for _fn, future, _heavy, _bare in batch:
        if not future.done():
            future.set_exception(error)
