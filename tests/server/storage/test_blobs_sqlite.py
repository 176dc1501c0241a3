"""The SQLite backend with its large states in a real SeaweedFS bucket: where the bytes go,
what a stopped, emptied or damaged object store does to puts and GETs, and gc of objects
(the grace period, and sweeps racing puts)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import rngvault
from rngvault._errors import NotFoundError, StoreError
from rngvault.server.storage import open_store
from rngvault.server.storage.base import SnapshotKey, StoreFullError
from rngvault.server.storage.blobs import BLOB_MIN, BlobError, S3Blobs, blob_key
from rngvault.server.storage.sqlite import SQLiteStore
from tests import _seaweed

pytestmark = pytest.mark.anyio
Body = Callable[..., bytes]


def new_blobs(server: _seaweed.SeaweedServer, **options: float) -> S3Blobs:
    """A bucket prefix of the test's own on ``server``."""
    return S3Blobs(server.url(f"t-{uuid.uuid4().hex[:12]}"), env=server.env, **options)


@pytest.fixture
def blobs(seaweed: _seaweed.SeaweedServer) -> S3Blobs:
    return new_blobs(seaweed)


@pytest.fixture
async def store(tmp_path: Path, blobs: S3Blobs) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(f"sqlite:///{tmp_path / 'db.sqlite'}", blobs=blobs)
    try:
        yield opened
    finally:
        await opened.close()


def key(name: str, run: str = "resnet") -> SnapshotKey:
    return SnapshotKey("alice", run, name)


async def put(store: SQLiteStore, name: str, body: bytes, run: str = "resnet") -> None:
    await store.put(key(name, run), body, rngvault.decode(body))


def rows(path: Path) -> list[tuple[bytes, bytes, int | None, object]]:
    """(full SHA-256, data, external, base) of every state row."""
    with sqlite3.connect(path) as conn:
        return [
            (bytes(r[0]), bytes(r[1]), r[2], r[3])
            for r in conn.execute("SELECT coalesce(sha256, hash), data, external, base FROM states")
        ]


def external(path: Path) -> set[bytes]:
    """The digests of the state rows whose bytes are in the blob store."""
    return {digest for digest, _data, outside, _base in rows(path) if outside}


def in_bucket(blobs: S3Blobs) -> set[bytes]:
    """Every object's digest (last modified at any time)."""
    return {digest for digest, _modified in blobs.list_older(-3600)}


def other_state(size: int = 2 * BLOB_MIN) -> tuple[bytes, bytes]:
    """(digest, bytes) of an object no row refers to."""
    data = random.randbytes(size)
    return hashlib.sha256(data).digest(), data


async def test_large_whole_states_land_in_the_bucket_and_gets_are_byte_identical(
    store: SQLiteStore, blobs: S3Blobs, make_body: Body
) -> None:
    bodies = {f"s{i}": make_body(i, shared=i) for i in range(3)}
    for name, body in bodies.items():
        await put(store, name, body)
    found = rows(store.path)
    outside = [r for r in found if r[2] == 1]
    inside = [r for r in found if r[2] is None]
    assert outside and inside  # MT19937 states (~2.5 KB) go out, PCG64 ones (~100 B) stay
    assert all(data == b"" and base is None for _d, data, _e, base in outside)
    assert all(len(data) < BLOB_MIN or base is not None for _d, data, _e, base in inside)
    assert in_bucket(blobs) == {digest for digest, *_ in outside}
    for digest, *_ in outside:
        state = blobs.get(digest)  # under its digest's key, holding the state itself
        assert len(state) >= BLOB_MIN and hashlib.sha256(state).digest() == digest
    for name, body in bodies.items():
        assert await store.get(key(name)) == body
    await store.check()


async def test_a_store_opened_by_url_reads_the_aws_environment_and_needs_its_blobs(
    tmp_path: Path,
    seaweed: _seaweed.SeaweedServer,
    make_body: Body,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    url, path = seaweed.url(f"t-{uuid.uuid4().hex[:12]}"), tmp_path / "db.sqlite"
    body = make_body(5)
    store = await open_store(f"sqlite:///{path}", blobs=url)
    try:
        await put(store, "a", body)
        assert await store.get(key("a")) == body
    finally:
        await store.close()
    assert external(path)
    without = await open_store(f"sqlite:///{path}")
    try:
        with pytest.raises(StoreError, match=r"kept in a blob store.*--blobs s3://"):
            await without.get(key("a"))
    finally:
        await without.close()


async def test_states_stored_before_blobs_were_configured_stay_in_the_database(
    tmp_path: Path, blobs: S3Blobs, make_body: Body
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = await SQLiteStore.open(url)
    try:
        await put(store, "old", make_body(1))
    finally:
        await store.close()
    before = rows(tmp_path / "db.sqlite")
    store = await SQLiteStore.open(url, blobs=blobs)
    try:
        assert await store.get(key("old")) == make_body(1)
        await put(store, "same-states", make_body(1), run="other")  # its rows are reused
        assert rows(tmp_path / "db.sqlite") == before and not in_bucket(blobs)
        await put(store, "new", make_body(2, shared=2))
        assert external(tmp_path / "db.sqlite") == in_bucket(blobs) != set()
        assert await store.get(key("same-states", "other")) == make_body(1)
    finally:
        await store.close()


async def test_deltas_based_on_a_state_in_the_bucket_read_back(
    tmp_path: Path, blobs: S3Blobs, make_body: Body
) -> None:
    """The Python random state stays put while ``moving`` moves: later steps' legacy MT
    states are deltas of the one in the bucket, rebuilt from it after a restart."""
    import numpy as np

    legacy = np.random.RandomState(7)
    bodies = []
    for _ in range(4):
        snap = rngvault.capture({"legacy": legacy}, include_globals=False)
        bodies.append(rngvault.encode(snap))
        legacy.random_sample(10)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = await SQLiteStore.open(url, blobs=blobs)
    try:
        for step, body in enumerate(bodies):
            await put(store, f"step{step}", body)
    finally:
        await store.close()
    found = rows(tmp_path / "db.sqlite")
    assert sum(r[2] == 1 for r in found) == 1 and sum(r[3] is not None for r in found) == 3
    store = await SQLiteStore.open(url, blobs=blobs)  # an empty cache of bases
    try:
        for step, body in enumerate(bodies):
            assert await store.get(key(f"step{step}")) == body
    finally:
        await store.close()


async def test_with_the_object_store_stopped_a_put_fails_and_leaves_nothing_visible(
    tmp_path: Path, make_body: Body
) -> None:
    _seaweed.require()
    server = _seaweed.SeaweedServer().start()
    try:
        new_blobs(server).put(*other_state())  # a new server's first write waits for a volume
        blobs = new_blobs(server, timeout=2.0, connect_timeout=1.0, retries=0)
        store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'db.sqlite'}", blobs=blobs)
        try:
            await put(store, "before", make_body(1))
            server.kill()
            with pytest.raises(StoreError) as failed:
                await put(store, "during", make_body(2, shared=2), run="other")
            assert not isinstance(failed.value, StoreFullError)  # a 503, not a 507
            assert isinstance(failed.value, BlobError) and failed.value.reason == "unreachable"
            assert "cannot be reached" in str(failed.value)
            with pytest.raises(StoreError, match="cannot be reached"):
                await store.check()
            page = await store.list_runs()
            assert [run.run for run in page.items] == ["resnet"]
            with pytest.raises(NotFoundError):
                await store.get(key("during", "other"))
            assert len(rows(store.path)) == 3  # the first snapshot's states only
            server.restart()
            deadline = time.monotonic() + 30  # as a client's spool does: retry until taken
            while True:
                try:
                    await put(store, "during", make_body(2, shared=2), run="other")
                    break
                except BlobError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            assert await store.get(key("during", "other")) == make_body(2, shared=2)
        finally:
            await store.close()
    finally:
        server.stop()


async def test_a_missing_object_is_a_store_error_naming_the_blob(
    store: SQLiteStore, blobs: S3Blobs, make_body: Body
) -> None:
    await put(store, "a", make_body(1))
    gone = sorted(external(store.path))[0]
    blobs.delete([gone])
    with pytest.raises(StoreError) as failed:
        await store.get(key("a"))
    assert f"blob {gone.hex()} is missing from {blobs.url}" in str(failed.value)
    assert "alice/resnet" in str(failed.value)
    assert not isinstance(failed.value, (NotFoundError, StoreFullError))  # a 503


async def test_a_corrupt_object_is_a_store_error_naming_the_blob(
    store: SQLiteStore, blobs: S3Blobs, seaweed: _seaweed.SeaweedServer, make_body: Body
) -> None:
    import obstore
    from obstore.store import S3Store

    body = make_body(1)
    await put(store, "a", body)
    damaged = sorted(external(store.path))[0]
    state = blobs.get(damaged)
    raw = S3Store(
        blobs.bucket,
        prefix=blobs.prefix,
        config={
            "endpoint": seaweed.endpoint,
            "access_key_id": seaweed.env["AWS_ACCESS_KEY_ID"],
            "secret_access_key": seaweed.env["AWS_SECRET_ACCESS_KEY"],
            "region": "us-east-1",
        },
        client_options={"allow_http": True},
    )
    obstore.put(raw, blob_key(damaged), state[:-1] + bytes([state[-1] ^ 1]))
    with pytest.raises(StoreError) as failed:
        await store.get(key("a"))
    assert f"blob {damaged.hex()}" in str(failed.value) and "corrupt" in str(failed.value)
    obstore.put(raw, blob_key(damaged), state)
    assert await store.get(key("a")) == body


async def test_a_sweep_deletes_only_unreferenced_objects_older_than_the_grace(
    store: SQLiteStore, blobs: S3Blobs, make_body: Body
) -> None:
    await put(store, "kept", make_body(1))
    referenced = external(store.path)
    old, old_data = other_state()
    blobs.put(old, old_data)
    time.sleep(2.5)  # object times have a resolution of one second
    young, young_data = other_state()
    blobs.put(young, young_data)
    assert await store.sweep_blobs(3600) == 0
    assert await store.sweep_blobs(1.5) == 1
    assert in_bucket(blobs) == referenced | {young}
    assert await store.sweep_blobs(0) == 1
    assert in_bucket(blobs) == referenced
    assert await store.get(key("kept")) == make_body(1)


async def test_deletes_leave_objects_and_collect_sweeps_them(
    store: SQLiteStore, blobs: S3Blobs, make_body: Body
) -> None:
    await put(store, "a", make_body(1, shared=1))
    await put(store, "b", make_body(2, shared=2))
    first = external(store.path)
    await store.delete_snapshot("alice", "resnet", "a")
    second = external(store.path)
    assert second < first and in_bucket(blobs) == first  # the rows went, not the objects
    done = await store.collect("alice/*", keep_last=1, dry_run=True)
    assert done.objects == 0 and in_bucket(blobs) == first
    done = await store.collect("alice/*", keep_last=1)  # deletes nothing, sweeps with GRACE
    assert done.snapshots == 0 and done.objects == 0 and in_bucket(blobs) == first
    assert await store.sweep_blobs(0) == len(first - second)
    assert in_bucket(blobs) == second
    assert await store.get(key("b")) == make_body(2, shared=2)
    await put(store, "c", make_body(3, shared=3))
    store.grace = 0
    done = await store.collect("alice/*", keep_last=1)  # deletes b, then sweeps its objects
    assert done.snapshots == 1 and done.objects == len(second - external(store.path)) > 0
    assert in_bucket(blobs) == external(store.path)
    assert await store.get(key("c")) == make_body(3, shared=3)


async def test_sweeps_racing_puts_of_the_same_states_never_leave_a_row_without_its_object(
    store: SQLiteStore, blobs: S3Blobs, make_body: Body
) -> None:
    """Puts and deletes of snapshots sharing their large states, while sweeps with no grace
    run back to back: every object a row refers to is there, at every moment checked."""
    bodies = [make_body(i, shared=0) for i in range(6)]  # the two MT states shared
    stop = asyncio.Event()
    sweeps = puts = 0

    async def sweeping() -> None:
        nonlocal sweeps
        while not stop.is_set():
            await store.sweep_blobs(0)
            sweeps += 1

    async def putting() -> None:
        nonlocal puts
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            await asyncio.gather(
                *(put(store, f"n{puts}-{i}", body) for i, body in enumerate(bodies))
            )
            assert external(store.path) <= in_bucket(blobs)
            await store.delete_run("alice", "resnet")  # the states' rows go
            puts += 1
        stop.set()

    await asyncio.wait_for(asyncio.gather(sweeping(), putting()), 60)
    assert puts >= 2 and sweeps >= 2
    for i, body in enumerate(bodies):
        await put(store, f"last-{i}", body)
    await store.sweep_blobs(0)
    assert external(store.path) and external(store.path) <= in_bucket(blobs)
    for i, body in enumerate(bodies):
        assert await store.get(key(f"last-{i}")) == body
