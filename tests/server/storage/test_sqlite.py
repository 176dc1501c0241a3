"""SQLite-specific guarantees: pragmas, deduplication, group commit, full disk, index use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import rngvault
from rngvault._errors import NotFoundError, StoreError
from rngvault.server.storage import migrations, open_store
from rngvault.server.storage.base import SnapshotKey, StoreFullError, encode_cursor
from rngvault.server.storage.content import prepare
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
    store = await SQLiteStore.open(f"sqlite:///{path}?max_page_count={pages + 4}")
    try:
        stored, full = [], 0
        for i in range(1, 300):
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


def _fill_run(path: Path, run: str, count: int, blob: int = 0) -> None:
    """Insert ``count`` snapshots of run ``ns/run`` directly (fast): listing rows, and with
    ``blob`` > 0 a state of that many random bytes per snapshot plus one they all share."""
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
            "INSERT INTO snapshots (id, run_id, name, stored) VALUES (?, ?, ?, ?)",
            ((i, run_id, f"s{i}", float(i)) for i in ids),
        )
        db.executemany(
            "INSERT INTO entries (id, snapshot_id, rank, body_sha256, digest, size, envelope,"
            " info) VALUES (?, ?, 0, x'00', 'd', 1, x'00', ?)",
            ((i, i, info) for i in ids),
        )
        if blob:
            shared = db.execute(
                "INSERT INTO states (hash, data) VALUES (randomblob(32), randomblob(?))", (blob,)
            ).lastrowid
            for i in ids:
                own = db.execute(
                    "INSERT INTO states (hash, data) VALUES (randomblob(32), randomblob(?))",
                    (blob,),
                ).lastrowid
                db.executemany(
                    "INSERT INTO entry_states (entry_id, position, at, state_id)"
                    " VALUES (?, ?, 0, ?)",
                    [(i, 0, shared), (i, 1, own)],
                )


def _sizes(path: Path) -> tuple[int, int]:
    """Bytes of the database file and of its WAL."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def _counts(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("runs", "snapshots", "entries", "entry_states", "states")
        ]


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


async def test_deleting_a_large_run_lets_writes_and_listing_go_on_meanwhile(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    """A run's DELETE runs in batches, each its own transaction: puts to another run are
    answered between them (not after the whole delete), reads and listings go on, and the
    delete frees every row and blob of the run."""
    await put(sqlite_store, k("before", run="other"), make_body(0))
    await sqlite_store.close()
    _fill_run(sqlite_store.path, "big", 20_000, blob=500)
    store = await SQLiteStore.open(f"sqlite:///{sqlite_store.path}")
    try:
        started = time.monotonic()
        deleting = asyncio.create_task(store.delete_run("ns", "big"))
        await asyncio.sleep(0.02)
        latencies, listed, i = [], 0, 0
        while not deleting.done():
            i += 1
            begin = time.monotonic()
            await put(store, k(f"during{i}", run="other"), make_body(i))
            latencies.append(time.monotonic() - begin)
            assert await store.get(k(f"during{i}", run="other")) == make_body(i)
            runs = await store.list_runs()
            assert "other" in [r.run for r in runs.items]
            with contextlib.suppress(NotFoundError):  # the last batch removed the run
                listed += len((await store.list_snapshots("ns", "big", limit=10)).items) == 10
        elapsed = time.monotonic() - started
        assert await deleting == 20_000
        assert len(latencies) >= 3 and listed >= 1, "the delete ended before anything ran"
        assert max(latencies) < 1.0, (
            f"a put waited {max(latencies):.2f} s (delete: {elapsed:.2f} s)"
        )
        assert max(latencies) < elapsed / 3
        assert _counts(store.path) == [1, 1 + i, 1 + i, 3 * (1 + i), 2 + (1 + i)]
    finally:
        await store.close()


async def test_a_large_delete_leaves_a_small_wal(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.close()
    _fill_run(sqlite_store.path, "big", 20_000, blob=500)
    store = await SQLiteStore.open(f"sqlite:///{sqlite_store.path}")
    try:
        assert await store.delete_run("ns", "big") == 20_000
        _db, wal = _sizes(store.path)
        assert wal <= 1024 * 1024, f"the WAL is {wal / 2**20:.1f} MiB after the delete"
        limit = await store._writer.run(lambda c: c.execute("PRAGMA journal_size_limit").fetchone())
        assert 0 < limit[0] <= 64 * 1024 * 1024
    finally:
        await store.close()


async def test_vacuum_returns_the_pages_deletes_freed(
    sqlite_store: SQLiteStore, make_body: Body
) -> None:
    """A new store vacuums incrementally; an older one (auto_vacuum off) is converted by its
    first vacuum. Either way the file shrinks and what is left reads back."""
    await put(sqlite_store, k("kept", run="other"), make_body(1))
    await sqlite_store.close()
    for converted in (False, True):
        _fill_run(sqlite_store.path, "big", 5_000, blob=2000)
        if converted:
            with sqlite3.connect(sqlite_store.path) as db:
                db.execute("PRAGMA auto_vacuum=NONE")
                db.execute("VACUUM")
                assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        store = await SQLiteStore.open(f"sqlite:///{sqlite_store.path}")
        try:
            await store.delete_run("ns", "big")
            full, _wal = _sizes(store.path)
            returned = await store.vacuum()
            after, wal = _sizes(store.path)
            assert after < full / 4, (full, after)
            assert returned >= full - after - wal > 0
            assert await store.get(k("kept", run="other")) == make_body(1)
            mode = await store._read(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0])
            assert mode == 2  # INCREMENTAL
        finally:
            await store.close()
        with sqlite3.connect(sqlite_store.path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_backup_of_a_mostly_free_store_is_compact(
    sqlite_store: SQLiteStore, make_body: Body, tmp_path: Path
) -> None:
    await put(sqlite_store, k("kept", run="other"), make_body(1))
    await sqlite_store.close()
    _fill_run(sqlite_store.path, "big", 5_000, blob=2000)
    store = await SQLiteStore.open(f"sqlite:///{sqlite_store.path}")
    try:
        await store.delete_run("ns", "big")
        with sqlite3.connect(store.path) as db:
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
        assert free > pages * 0.65
        target = tmp_path / "copy.sqlite"
        backup(f"sqlite:///{store.path}", target)
        assert target.stat().st_size < store.path.stat().st_size / 4
    finally:
        await store.close()
    copy = await SQLiteStore.open(f"sqlite:///{target}")
    try:
        assert await copy.get(k("kept", run="other")) == make_body(1)
    finally:
        await copy.close()


async def test_a_backup_taken_while_puts_go_on_is_consistent(
    sqlite_store: SQLiteStore, make_body: Body, tmp_path: Path
) -> None:
    for i in range(20):
        await put(sqlite_store, k(f"s{i}"), make_body(i))
    target = tmp_path / "copy.sqlite"
    writes = asyncio.gather(*(put(sqlite_store, k(f"t{i}"), make_body(i)) for i in range(50)))
    await asyncio.to_thread(backup, f"sqlite:///{sqlite_store.path}", target)
    await writes
    with sqlite3.connect(target) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        listed = db.execute("SELECT snapshots FROM runs").fetchone()[0]
        assert listed == db.execute("SELECT count(*) FROM snapshots").fetchone()[0] >= 20


def _large_body(seed: int) -> bytes:
    """A snapshot of 20 distinct legacy NumPy states, about 50 KB."""
    states = {f"g{j}": np.random.RandomState(seed * 100 + j) for j in range(20)}
    return rngvault.encode(rngvault.capture(states, include_globals=False))


async def _fill_until_full(
    store: SQLiteStore, body: Callable[[int], bytes], limit: int = 400
) -> tuple[int, str]:
    """Put snapshots until the store answers StoreFullError; how many fit, and its message."""
    for i in range(limit):
        try:
            await put(store, k(f"s{i}", run=f"r{i % 3}"), body(i))
        except StoreFullError as exc:
            return i, str(exc)
    raise AssertionError(f"{limit} puts fitted: the store never became full")


async def test_at_the_page_cap_deletes_and_gc_still_work(tmp_path: Path, make_body: Body) -> None:
    path = tmp_path / "capped.sqlite"
    store = await SQLiteStore.open(f"sqlite:///{path}?max_page_count=400")
    try:
        stored, message = await _fill_until_full(store, lambda i: make_body(i, shared=i))
        assert stored > 20
        assert str(tmp_path) not in message and "delete" in message
        assert await store.delete_snapshot("ns", "r0", "s0") == 1
        assert await store.delete_run("ns", "r1") > 0
        collected = await store.collect("ns/*", keep_last=1)
        assert collected.snapshots > 0 and collected.blobs > 0
        await put(store, k("after", run="r9"), make_body(999))  # room again
        assert await store.get(k("after", run="r9")) == make_body(999)
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test (needs root and mount rights; skipped otherwise)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if shutil.which("mount")
        else None
    )
    if done is None or done.returncode != 0:
        why = done.stderr.strip() if done is not None else "no mount command"
        pytest.skip(f"cannot mount a small file system here ({why}); the page cap test covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_on_a_full_file_system_deletes_still_work(small_disk: Path, make_body: Body) -> None:
    """Puts stop while 6 MiB are still free, so deleting (which needs WAL space, and a
    checkpoint room for the WAL's pages) works and makes room; the 507 message names no
    server path."""
    path = small_disk / "store.sqlite"
    store = await SQLiteStore.open(f"sqlite:///{path}?reserve_mb=6")
    try:
        stored, message = await _fill_until_full(store, _large_body)
        assert stored > 20
        assert str(small_disk) not in message and "delete" in message
        assert await store.delete_snapshot("ns", "r0", "s0") == 1
        assert await store.delete_run("ns", "r1") > 0
        assert (await store.collect("ns/*", keep_last=2)).snapshots > 0
        await store.vacuum()
        after = _large_body(9999)
        await put(store, k("after", run="r9"), after)
        assert await store.get(k("after", run="r9")) == after
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_states_keyed_by_their_whole_hash_are_found_and_a_taken_short_key_is_not_used(
    tmp_path: Path, make_body: Body
) -> None:
    """Rows stored before short keys (keyed by their whole SHA-256) are shared by new puts; a
    state whose first 8 bytes key another state is stored keyed by its whole SHA-256."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    first, other = make_body(1), make_body(2)
    store = await open_store(url)
    try:
        await put(store, k("a"), first)
    finally:
        await store.close()
    new = sorted(
        set(prepare(other, rngvault.decode(other)).blobs)
        - set(prepare(first, rngvault.decode(first)).blobs)
    )
    taken = new[0]
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE states SET hash = sha256, sha256 = NULL")  # as stored before
        db.execute(
            "INSERT INTO states (hash, sha256, data) VALUES (?, ?, ?)",
            (taken[:8], bytes(32), b"another state"),
        )
        before = db.execute("SELECT count(*) FROM states").fetchone()[0]
    store = await open_store(url)
    try:
        await put(store, k("b"), first)  # the same states as "a"
        await put(store, k("c"), other)
        assert await store.get(k("a")) == first
        assert await store.get(k("b")) == first
        assert await store.get(k("c")) == other
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        after = db.execute("SELECT count(*) FROM states").fetchone()[0]
        keyed = db.execute("SELECT sha256 FROM states WHERE hash = ?", (taken,)).fetchone()
    assert after == before + len(new)
    assert keyed == (None,)
