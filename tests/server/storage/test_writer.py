"""The SQLite writer: where jobs run, waiting for another connection's lock, rollbacks."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import rngvault
from rngvault._errors import StoreError
from rngvault.server.storage import sqlite as sqlite_module
from rngvault.server.storage.base import SnapshotKey
from rngvault.server.storage.sqlite import SQLiteStore, connect
from rngvault.server.storage.writer import Writer

pytestmark = pytest.mark.anyio

Body = Callable[..., bytes]


def k(name: str, run: str = "r") -> SnapshotKey:
    return SnapshotKey("ns", run, name)


async def put(store: SQLiteStore, key: SnapshotKey, body: bytes) -> None:
    await store.put(key, body, rngvault.decode(body))


async def test_small_jobs_run_on_the_loop_and_heavy_ones_in_the_writer_thread(
    sqlite_store: SQLiteStore,
) -> None:
    def where(conn: sqlite3.Connection) -> str:
        return threading.current_thread().name

    assert await sqlite_store._writer.run(where) == threading.current_thread().name
    assert (await sqlite_store._writer.run(where, heavy=True)).startswith("rngvault-sqlite-writer")


async def test_a_lock_held_by_another_connection_is_waited_for_off_the_loop(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    other = connect(sqlite_store.path)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock, as another process could
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.5)
        other.execute("COMMIT")
        released.set()

    holder = threading.Thread(target=release_later)
    holder.start()
    gaps, last = [], time.monotonic()

    async def tick() -> None:
        nonlocal last
        while not released.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    await put(sqlite_store, k("waited"), make_body(1))
    waited = time.monotonic() - started
    await ticker
    holder.join()
    other.close()
    assert waited >= 0.4, "the put did not wait for the other connection's lock"
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.2f} s"
    assert await sqlite_store.get(k("waited")) == make_body(1)


async def test_a_cancelled_request_does_not_undo_or_stop_the_writes(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    task = asyncio.create_task(put(sqlite_store, k("cancelled"), make_body(1)))
    await asyncio.sleep(0)  # queued, not yet committed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await put(sqlite_store, k("after"), make_body(2))
    assert await sqlite_store.get(k("cancelled")) == make_body(1)
    assert await sqlite_store.get(k("after")) == make_body(2)


async def test_an_sqlite_error_fails_only_its_job_and_forgets_the_ids_it_rolled_back(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    # Queued in one loop iteration: one batch. The new run's id is remembered by the first
    # job, rolled back with the batch, and must not be reused when the job is retried alone.
    outcome = await asyncio.gather(
        put(sqlite_store, k("a", run="new-run"), make_body(1)),
        sqlite_store._writer.run(broken),
        return_exceptions=True,
    )
    assert outcome[0] is None
    assert isinstance(outcome[1], StoreError) and "no_such_table" in str(outcome[1])
    await put(sqlite_store, k("b", run="new-run"), make_body(2))
    with sqlite3.connect(sqlite_store.path) as db:
        run_id = db.execute("SELECT id FROM runs WHERE name = 'new-run'").fetchone()[0]
        assert db.execute("SELECT snapshots FROM runs").fetchall() == [(2,)]
    assert sqlite_store._ids.runs[("ns", "new-run")] == run_id
    assert await sqlite_store.get(k("a", run="new-run")) == make_body(1)


async def test_a_closed_writer_refuses_new_jobs(tmp_path: Path, make_body: Body) -> None:
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await put(store, k("a"), make_body(1))
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await put(store, k("b"), make_body(2))


async def test_a_lock_held_past_the_busy_timeout_fails_the_batch_at_once(
    tmp_path: Path, make_body: Body, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the batch ran, so it is not retried job by job (each would wait the busy
    timeout again): every put fails after about one timeout, with a 503-class error."""
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", 0.2)
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    other = connect(store.path)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        outcome = await asyncio.gather(
            *(put(store, k(f"s{i}"), make_body(i)) for i in range(8)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(o, StoreError) and "locked" in str(o) for o in outcome), outcome
        assert elapsed < 1.0, f"8 puts took {elapsed:.2f} s against a 0.2 s busy timeout"
    finally:
        other.execute("ROLLBACK")
        other.close()
    await put(store, k("after"), make_body(9))  # the lock is free again: writes go on
    await store.close()


async def test_ids_remembered_are_dropped_when_another_connection_commits(
    tmp_path: Path, make_body: Body
) -> None:
    """Two stores on one file: B deletes A's run and reuses its row ids for a new run and
    new states. A's next puts go where they belong and read back byte for byte."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    a, b = await SQLiteStore.open(url), await SQLiteStore.open(url)
    try:
        await put(a, k("a", run="r1"), make_body(1, shared=7))
        await b.delete_run("ns", "r1")
        await put(b, k("x", run="r2"), make_body(2, shared=8))
        await put(a, k("b", run="r1"), make_body(3, shared=7))
        await put(a, k("c", run="r3"), make_body(4, shared=7))
        assert [i.name for i in (await a.list_snapshots("ns", "r1")).items] == ["b"]
        assert [i.name for i in (await a.list_snapshots("ns", "r2")).items] == ["x"]
        assert await a.get(k("b", run="r1")) == make_body(3, shared=7)
        assert await a.get(k("c", run="r3")) == make_body(4, shared=7)
        assert await b.get(k("x", run="r2")) == make_body(2, shared=8)
    finally:
        await a.close()
        await b.close()


class _SlowCommit(sqlite3.Connection):
    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
        if sql == "COMMIT":
            time.sleep(0.3)
        return super().execute(sql, *args)  # type: ignore[arg-type]


async def test_a_cancelled_close_still_finishes_the_writes_it_waited_for(tmp_path: Path) -> None:
    """close() cancelled while a batch commits (a shutdown deadline): the batch and the one
    queued behind it still commit, their callers get their answers, the connection closes."""
    path = tmp_path / "slow.db"

    def open_slow() -> sqlite3.Connection:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, factory=_SlowCommit
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        return conn

    writer = Writer(open_slow, 1.0)
    await writer.start()
    first = asyncio.ensure_future(writer.run(lambda c: c.execute("INSERT INTO t VALUES (1)")))
    await asyncio.sleep(0.05)  # the first batch is in COMMIT, in the writer's thread
    second = asyncio.ensure_future(writer.run(lambda c: c.execute("INSERT INTO t VALUES (2)")))
    await asyncio.sleep(0)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(writer.close(), 0.05)
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (2,)
    closing = writer._closing
    assert closing is not None
    await asyncio.wait_for(asyncio.shield(closing), 5)
    assert writer._conn is not None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        writer._conn.execute("SELECT 1")


async def test_a_bug_in_a_job_fails_its_batch_and_the_writer_goes_on(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    def buggy(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO runs (namespace, name, created, updated) VALUES ('x', 'y', 0, 0)")
        raise ValueError("a bug")

    outcome = await asyncio.gather(
        sqlite_store._writer.run(buggy),
        put(sqlite_store, k("same-batch"), make_body(1)),
        return_exceptions=True,
    )
    assert all(isinstance(o, StoreError) and "ValueError: a bug" in str(o) for o in outcome)
    later = asyncio.ensure_future(put(sqlite_store, k("next"), make_body(2)))
    await asyncio.wait_for(later, 5)
    assert await sqlite_store.get(k("next")) == make_body(2)
    with sqlite3.connect(sqlite_store.path) as db:  # the buggy job's insert was rolled back
        assert db.execute("SELECT count(*) FROM runs WHERE namespace = 'x'").fetchone() == (0,)


async def test_a_snapshot_of_many_generators_is_written_off_the_loop(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One insert per state: a snapshot of hundreds of generators is a heavy job (run whole
    in the writer thread), and reads back byte for byte."""
    import numpy as np

    many = rngvault.encode(
        rngvault.capture(
            {f"g{i}": np.random.default_rng(i) for i in range(300)}, include_globals=False
        )
    )
    few = rngvault.encode(rngvault.capture({"g": np.random.default_rng(0)}, include_globals=False))
    heavy_flags: list[bool] = []
    real_run = sqlite_store._writer.run

    async def spy(fn: Callable[[sqlite3.Connection], object], *, heavy: bool = False) -> object:
        heavy_flags.append(heavy)
        return await real_run(fn, heavy=heavy)

    monkeypatch.setattr(sqlite_store._writer, "run", spy)
    await put(sqlite_store, k("many"), many)
    await put(sqlite_store, k("few"), few)
    assert heavy_flags == [True, False]
    assert await sqlite_store.get(k("many")) == many
