"""One thread owns the SQLite write connection; callers queue jobs to it.

Jobs that are queued while a transaction commits go into the next one together (group
commit): each batch is one ``BEGIN IMMEDIATE`` ... ``COMMIT``, so with synchronous=FULL the
cost of an fsync is shared by every write in the batch. A job's future resolves only after
its transaction committed. A job that raises an rngvault error (a conflict, say) is rolled
back to its savepoint and the batch goes on; an SQLite error (disk full) rolls the whole
batch back, which is then retried one job at a time so that only the failing job fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from rngvault._errors import RngVaultError, StoreError
from rngvault.server.storage.base import StoreFullError

T = TypeVar("T")
Job = tuple[Callable[[sqlite3.Connection], Any], concurrent.futures.Future[Any]]

_SQLITE_FULL = 13
MAX_BATCH = 256


def map_error(exc: sqlite3.Error) -> StoreError:
    """The rngvault error for an SQLite error (the one place they are translated)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return StoreFullError(f"the database is full, nothing was written: {exc}")
    return StoreError(f"SQLite error: {exc}")


class Writer:
    """The write connection's thread. ``connect`` runs in that thread."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="rngvault-sqlite-writer")
        self._thread.daemon = True
        self._closed = False
        self.commits = 0  # transactions committed, for tests and metrics

    def start(self) -> None:
        """Start the thread and wait until its connection is open (or raise why not)."""
        self._thread.start()
        self._ready.result()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Queue ``fn(connection)``; the future resolves after its transaction committed."""
        if self._closed:
            raise StoreError("the store is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``submit`` for coroutines."""
        return await asyncio.wrap_future(self.submit(fn))

    def close(self) -> None:
        """Finish the queued jobs, then close the connection."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _future in batch:
                outcomes.append(self._run_job(conn, fn))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(batch) > 1:
                for job in batch:
                    self._run_batch(conn, [job])
            else:
                batch[0][1].set_exception(map_error(exc))
            return
        except BaseException as exc:  # a bug in a job: fail the batch, keep the thread alive
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _fn, future in batch:
                future.set_exception(StoreError(f"write failed: {type(exc).__name__}: {exc}"))
            return
        for (_fn, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    @staticmethod
    def _run_job(
        conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]
    ) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT job")
        try:
            value = fn(conn)
        except RngVaultError as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return False, exc
        conn.execute("RELEASE job")
        return True, value
