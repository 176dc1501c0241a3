"""SQLite-specific guarantees: pragmas, deduplication, group commit, full disk, index use."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import rngvault
from rngvault._errors import StoreError
from rngvault.server.storage import migrations, open_store
from rngvault.server.storage.base import SnapshotKey, StoreFullError, encode_cursor
from rngvault.server.storage.sqlite import SQLiteStore, backup, parse_url

pytestmark = pytest.mark.anyio

Body = Callable[..., bytes]


def k(name: str, run: str = "r", namespace: str = "ns") -> SnapshotKey:
    return SnapshotKey(namespace, run, name)


async def put(store: SQLiteStore, key: SnapshotKey, body: bytes) -> None:
    await store.put(key, body, rngvault.decode(body))


async def test_live_database_is_wal_and_every_connection_is_synchronous_full(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    await put(sqlite_store, k("a"), make_body(1))
    with sqlite3.connect(sqlite_store.path) as outside:
        assert outside.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer = await sqlite_store._writer.run(lambda c: c.execute("PRAGMA synchronous").fetchone())
    reader = await sqlite_store._read(lambda c: c.execute("PRAGMA synchronous").fetchone())
    assert writer[0] == reader[0] == 2  # 2 = FULL


async def test_identical_states_are_stored_once_across_snapshots_and_runs(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    for i in range(10):
        await put(sqlite_store, k(f"s{i}", run=f"run{i % 2}"), make_body(i, shared=3))
    with sqlite3.connect(sqlite_store.path) as db:
        states = db.execute("SELECT count(*) FROM states").fetchone()[0]
    # 10 distinct "moving" states + one "fixed" + one "legacy" shared by all ten.
    assert states == 12


async def test_deleting_removes_state_blobs_nothing_refers_to(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    await put(sqlite_store, k("a"), make_body(1, shared=3))
    await put(sqlite_store, k("b"), make_body(2, shared=3))
    await sqlite_store.delete_snapshot("ns", "r", "a")
    with sqlite3.connect(sqlite_store.path) as db:
        assert db.execute("SELECT count(*) FROM states").fetchone()[0] == 3
    await sqlite_store.delete_run("ns", "r")
    with sqlite3.connect(sqlite_store.path) as db:
        counts = [
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("states", "entry_states", "entries", "snapshots", "runs")
        ]
    assert counts == [0, 0, 0, 0, 0]


async def test_writes_that_arrive_together_share_a_transaction(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    before = sqlite_store._writer.commits
    await asyncio.gather(*(put(sqlite_store, k(f"s{i}"), make_body(i)) for i in range(100)))
    commits = sqlite_store._writer.commits - before
    assert 1 <= commits < 100
    assert await sqlite_store.count_snapshots() == 100


async def test_a_full_database_answers_store_full_and_corrupts_nothing(
    tmp_path: Path, make_body: Body
) -> None:
    path = tmp_path / "small.sqlite"
    store = await SQLiteStore.open(f"sqlite:///{path}")
    await put(store, k("kept"), make_body(0))
    await store.close()
    with sqlite3.connect(path) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    store = await SQLiteStore.open(f"sqlite:///{path}?max_page_count={pages + 8}")
    try:
        stored, full = [], 0
        for i in range(1, 60):
            try:
                await put(store, k(f"s{i}"), make_body(i))
                stored.append(i)
            except StoreFullError:
                full += 1
        assert full > 0, "the size cap was never reached"
        assert await store.get(k("kept")) == make_body(0)
        for i in stored:
            assert await store.get(k(f"s{i}")) == make_body(i)
        assert await store.count_snapshots() == 1 + len(stored)
        await put(store, k("kept"), make_body(0))  # an identical retry needs no space
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _fill_run(path: Path, run: str, count: int) -> None:
    """Insert ``count`` listing rows directly (fast), enough for list_snapshots."""
    info = json.dumps({"created": 1.0, "step": 1, "epoch": 0, "metrics": {}, "generators": []})
    with sqlite3.connect(path) as db:
        run_id = db.execute(
            "INSERT INTO runs (namespace, name, created, updated, snapshots)"
            " VALUES ('ns', ?, 0, 0, ?)",
            (run, count),
        ).lastrowid
        first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM snapshots").fetchone()[0]
        ids = range(first, first + count)
        db.executemany(
            "INSERT INTO snapshots (id, run_id, name, stored) VALUES (?, ?, ?, 0)",
            ((i, run_id, f"s{i}") for i in ids),
        )
        db.executemany(
            "INSERT INTO entries (snapshot_id, rank, body_sha256, digest, size, envelope, info)"
            " VALUES (?, 0, x'00', 'd', 1, x'00', ?)",
            ((i, info) for i in ids),
        )


async def test_listing_a_run_of_100000_snapshots_is_as_fast_as_one_of_100(
    sqlite_store: SQLiteStore,
) -> None:
    await sqlite_store.close()
    _fill_run(sqlite_store.path, "big", 100_000)
    _fill_run(sqlite_store.path, "small", 100)
    store = await SQLiteStore.open(f"sqlite:///{sqlite_store.path}")
    try:

        async def median(run: str, cursor: str | None) -> float:
            times = []
            for _ in range(15):
                start = time.perf_counter()
                page = await store.list_snapshots("ns", run, cursor=cursor, limit=100)
                times.append(time.perf_counter() - start)
                assert len(page.items) == 100
            return statistics.median(times)

        small = await median("small", None)
        deep = await median("big", encode_cursor(99_000))
        first = await median("big", None)
        assert max(first, deep) < 3 * small + 0.002
    finally:
        await store.close()


async def test_listing_queries_use_the_indexes(sqlite_store: SQLiteStore) -> None:
    def plan(sql: str, *args: object) -> str:
        with sqlite3.connect(sqlite_store.path) as db:
            return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, args))

    snapshots = plan(
        "SELECT id, name, stored FROM snapshots WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
        1,
        0,
        100,
    )
    runs = plan(
        "SELECT namespace, name FROM runs WHERE namespace GLOB ? AND (namespace, name) > (?, ?)"
        " ORDER BY namespace, name LIMIT ?",
        "*",
        "a",
        "b",
        100,
    )
    assert "snapshots_by_run" in snapshots and "TEMP B-TREE" not in snapshots
    assert "INDEX" in runs and "TEMP B-TREE" not in runs


async def test_schema_is_versioned_and_migrated_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    for _ in range(2):
        store = await open_store(url)
        await store.close()
    with sqlite3.connect(tmp_path / "m.sqlite") as db:
        rows = db.execute("SELECT version, name FROM schema_version").fetchall()
        assert rows == [(m.version, m.name) for m in migrations.load("sqlite")]
        db.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    with pytest.raises(StoreError, match="newer than this rngvault knows"):
        await open_store(url)


async def test_backup_copies_a_live_database(
    sqlite_store: SQLiteStore, make_body: Body, tmp_path: Path
) -> None:
    await put(sqlite_store, k("a"), make_body(1))
    backup(f"sqlite:///{sqlite_store.path}", tmp_path / "copy.sqlite")
    copy = await SQLiteStore.open(f"sqlite:///{tmp_path / 'copy.sqlite'}")
    try:
        assert await copy.get(k("a")) == make_body(1)
    finally:
        await copy.close()


def test_sqlite_urls_are_parsed_or_rejected_with_the_reason() -> None:
    assert parse_url("sqlite:///rel/x.db") == (Path("rel/x.db"), {})
    assert parse_url("sqlite:////abs/x.db?max_page_count=9") == (
        Path("/abs/x.db"),
        {"max_page_count": 9},
    )
    assert parse_url("plain.db") == (Path("plain.db"), {})
    for bad in ("sqlite://host/x.db", "sqlite:///", "sqlite:///x.db?cache=1"):
        with pytest.raises(StoreError, match="SQLite URL"):
            parse_url(bad)


async def test_unknown_url_schemes_name_the_supported_ones() -> None:
    with pytest.raises(StoreError, match=r"no storage backend for mysql:// URLs.*sqlite://"):
        await open_store("mysql://x/y")
