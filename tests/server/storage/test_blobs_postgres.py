"""PostgreSQL with its large state blobs in a real SeaweedFS bucket: byte-identical GETs, puts
that leave nothing behind when the bucket is away, missing and corrupt objects named, and
sweeps (grace, collect, two replicas racing puts) that never delete an object a row needs."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from tests import _seaweed
from tests._postgres import HOW_TO

psycopg = pytest.importorskip("psycopg", reason=f"psycopg is not installed: {HOW_TO}")

import rngvault  # noqa: E402
from rngvault._errors import NotFoundError, StoreError  # noqa: E402
from rngvault.server.storage import postgres, postgres_sql  # noqa: E402
from rngvault.server.storage.base import SnapshotKey  # noqa: E402
from rngvault.server.storage.blobs import BLOB_MIN, BlobError, S3Blobs, blob_key  # noqa: E402
from rngvault.server.storage.postgres import PostgresStore  # noqa: E402

pytestmark = pytest.mark.anyio
Body = Callable[..., bytes]
_prefixes = itertools.count(1)


def k(name: str, run: str = "r", rank: int = 0) -> SnapshotKey:
    return SnapshotKey("ns", run, name, rank)


async def put(store: PostgresStore, key: SnapshotKey, body: bytes) -> bool:
    return (await store.put(key, body, rngvault.decode(body))).created


def moving_body(draws: int, seed: int = 0) -> bytes:
    """A snapshot of one Python ``random.Random`` (a 2.5 KB MT19937 state) ``draws`` on and
    one small PCG64: successive draws give a delta based on the first, stored whole."""
    python = random.Random(seed)
    for _ in range(draws):
        python.random()
    return rngvault.encode(
        rngvault.capture(
            {"python": python, "small": np.random.default_rng(seed)},
            include_globals=False,
            metadata=rngvault.Metadata(step=draws),
        )
    )


@pytest.fixture
def bucket(seaweed: _seaweed.SeaweedServer) -> S3Blobs:
    """Blobs below a prefix of the test's own in the session's bucket."""
    return S3Blobs(seaweed.url(f"pg{next(_prefixes)}/states"), env=seaweed.env, timeout=5)


@pytest.fixture
async def store(postgres_url: str, bucket: S3Blobs) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.open(postgres_url, blobs=bucket)
    try:
        yield opened
    finally:
        await opened.close()


async def state_rows(url: str) -> dict[bytes, tuple[int, int | None, bool]]:
    """hash -> (len(data), external, is a delta) of every state row."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT hash, length(data), external, base IS NOT NULL FROM states"
        )
        return {bytes(h): (n, x, d) for h, n, x, d in await cursor.fetchall()}


def objects(bucket: S3Blobs) -> set[bytes]:
    return {digest for digest, _modified in bucket.list_older(-3600)}


def dead_bucket(seaweed: _seaweed.SeaweedServer) -> S3Blobs:
    """The bucket's URL at an endpoint where no server listens (a stopped object store)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**seaweed.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    return S3Blobs(seaweed.url("dead"), env=env, timeout=2, connect_timeout=1, retries=0)


async def test_large_whole_states_live_in_the_bucket_and_get_is_byte_identical(
    store: PostgresStore, postgres_url: str, bucket: S3Blobs, make_body: Body
) -> None:
    """Whole rows of BLOB_MIN bytes or more are empty and external, their objects under their
    digests; small rows stay in the database; GET returns the very bytes put."""
    bodies = {f"s{n}": make_body(n, shared=n % 2) for n in range(4)}
    for name, body in bodies.items():
        assert await put(store, k(name), body)
    rows = await state_rows(postgres_url)
    external = {h for h, (n, x, _d) in rows.items() if x == 1}
    assert external and all(rows[h][0] == 0 for h in external)
    assert all(x is None and (n < BLOB_MIN or d) for n, x, d in rows.values() if x != 1)
    assert objects(bucket) == external
    for digest in external:
        assert len(bucket.get(digest)) >= BLOB_MIN  # the state itself, checked by its digest
    for name, body in bodies.items():
        assert await store.get(k(name)) == body


async def test_deltas_based_on_an_external_state_rebuild_from_its_object(
    store: PostgresStore, postgres_url: str, bucket: S3Blobs
) -> None:
    """A state stored as a delta whose base is in the bucket GETs byte-identical, in this
    store and in another one (a replica with an empty base cache)."""
    bodies = {f"d{n}": moving_body(n * 10) for n in range(5)}
    for name, body in bodies.items():
        assert await put(store, k(name), body)
    rows = await state_rows(postgres_url)
    assert any(d for _n, _x, d in rows.values()), "no delta was stored"
    assert any(x == 1 for _n, x, _d in rows.values())
    replica = await PostgresStore.open(postgres_url, blobs=bucket)
    try:
        for name, body in bodies.items():
            assert await store.get(k(name)) == body
            assert await replica.get(k(name)) == body
    finally:
        await replica.close()


async def test_with_the_object_store_stopped_a_put_fails_and_leaves_nothing(
    postgres_url: str, seaweed: _seaweed.SeaweedServer, make_body: Body
) -> None:
    """An upload that fails rolls the put back: a StoreError naming the blob store, and not a
    row, run or snapshot of it in the database; the health check fails too."""
    bucket = dead_bucket(seaweed)
    store = await PostgresStore.open(postgres_url, blobs=bucket)
    try:
        with pytest.raises(StoreError, match=f"{bucket.url} .*cannot be reached"):
            await put(store, k("lost"), make_body(1))
        assert await state_rows(postgres_url) == {}
        assert (await store.list_runs()).items == ()
        with pytest.raises(NotFoundError):
            await store.get(k("lost"))
        with pytest.raises(StoreError, match="s3://"):
            await store.check()
    finally:
        await store.close()


async def test_an_object_store_that_does_not_answer_fails_the_put_in_bounded_time(
    postgres_url: str,
    seaweed: _seaweed.SeaweedServer,
    make_body: Body,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An endpoint that accepts connections and never answers: the put fails with a
    StoreError naming the bucket after UPLOAD_TIMEOUT, and leaves nothing."""
    monkeypatch.setattr(postgres, "UPLOAD_TIMEOUT", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # connections complete in the backlog; nothing ever reads them
        env = {**seaweed.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        bucket = S3Blobs(seaweed.url("silent"), env=env, timeout=30, retries=0)
        store = await PostgresStore.open(postgres_url, blobs=bucket)
        try:
            with pytest.raises(StoreError, match=f"{bucket.url} did not take them within 1.0 s"):
                await put(store, k("lost"), make_body(11))
            assert await state_rows(postgres_url) == {}
            assert (await store.list_runs()).items == ()
        finally:
            await store.close()


async def test_the_health_check_reaches_the_bucket(store: PostgresStore) -> None:
    """check() returns when both the database and the bucket answer."""
    await store.check()
    assert store.blobs is not None


async def test_a_missing_object_fails_get_naming_the_blob(
    store: PostgresStore, postgres_url: str, bucket: S3Blobs, make_body: Body
) -> None:
    assert await put(store, k("a"), make_body(3))
    gone = sorted(h for h, (_n, x, _d) in (await state_rows(postgres_url)).items() if x == 1)[0]
    await bucket.delete_async([gone])
    with pytest.raises(BlobError, match=f"blob {gone.hex()} is missing from {bucket.url}"):
        await store.get(k("a"))


async def test_a_corrupt_object_fails_get_naming_the_blob(
    store: PostgresStore, postgres_url: str, bucket: S3Blobs, make_body: Body
) -> None:
    import obstore

    assert await put(store, k("a"), make_body(4))
    bad = sorted(h for h, (_n, x, _d) in (await state_rows(postgres_url)).items() if x == 1)[0]
    data = bucket.get(bad)
    obstore.put(bucket._store, blob_key(bad), data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(StoreError, match=f"blob {bad.hex()} .* is corrupt"):
        await store.get(k("a"))


async def test_a_sweep_deletes_only_unreferenced_objects_older_than_its_grace(
    store: PostgresStore, bucket: S3Blobs, make_body: Body
) -> None:
    import hashlib

    assert await put(store, k("kept"), make_body(5))
    used = objects(bucket)
    stray = b"stray" * 400
    digest = hashlib.sha256(stray).digest()
    await bucket.put_async(digest, stray)
    assert await store.sweep_blobs(3600) == 0  # too young
    assert objects(bucket) == used | {digest}
    assert await store.sweep_blobs(0) == 1
    assert objects(bucket) == used
    assert await store.get(k("kept")) == make_body(5)


async def test_collect_removes_rows_then_sweeps_their_objects(
    store: PostgresStore, bucket: S3Blobs, make_body: Body
) -> None:
    """Deletes leave objects; collect (grace 0 here) deletes them after its rows."""
    assert await put(store, k("old"), make_body(6, shared=60))
    assert await put(store, k("new"), make_body(7, shared=70))
    before = objects(bucket)
    await store.delete_snapshot("ns", "r", "old")
    assert objects(bucket) == before  # a delete removes rows only
    store.grace = 0
    collected = await store.collect("ns/*", keep_last=1)
    assert collected.snapshots == 0
    after = objects(bucket)
    assert after < before and collected.objects == len(before - after)
    assert await store.get(k("new")) == make_body(7, shared=70)


async def test_two_replicas_sweeping_while_putting_never_lose_an_object(
    postgres_url: str, bucket: S3Blobs, make_body: Body
) -> None:
    """Replica A puts, deletes and puts again the same states (their objects unreferenced in
    between) while replica B sweeps with grace 0 and puts too: every committed external row
    keeps its object and every snapshot reads back."""
    a = await PostgresStore.open(postgres_url, blobs=bucket)
    b = await PostgresStore.open(postgres_url, blobs=bucket)
    sweeping = True
    swept = 0

    async def sweep() -> None:
        nonlocal swept
        while sweeping:
            swept += await b.sweep_blobs(0)

    async def churn(store: PostgresStore, run: str, rounds: int) -> None:
        for n in range(rounds):
            body = make_body(n % 3, shared=n % 2)
            await put(store, k("x", run=run), body)
            assert await store.get(k("x", run=run)) == body
            await store.delete_snapshot("ns", run, "x")

    try:
        sweeper = asyncio.ensure_future(sweep())
        await asyncio.gather(churn(a, "a", 25), churn(b, "b", 10))
        sweeping = False
        await sweeper
        for n in range(3):
            await put(a, k(f"end{n}", run="a"), make_body(n, shared=n % 2))
            await b.sweep_blobs(0)
        rows = await state_rows(postgres_url)
        external = {h for h, (_n, x, _d) in rows.items() if x == 1}
        assert external <= objects(bucket)
        for n in range(3):
            assert await b.get(k(f"end{n}", run="a")) == make_body(n, shared=n % 2)
        assert swept > 0, "the sweeps never deleted an object: no race was exercised"
    finally:
        sweeping = False
        await a.close()
        await b.close()


async def test_without_blobs_every_state_stays_in_the_database(
    postgres_url: str, make_body: Body
) -> None:
    store = await PostgresStore.open(postgres_url)
    try:
        assert await put(store, k("a"), make_body(8))
        rows = await state_rows(postgres_url)
        assert rows and all(x is None and n > 0 for n, x, _d in rows.values())
        assert await store.sweep_blobs(0) == 0
        assert store.blobs is None
    finally:
        await store.close()


async def test_rows_stored_before_blobs_stay_in_the_database_and_read_back(
    postgres_url: str, bucket: S3Blobs, make_body: Body
) -> None:
    """A database filled without a blob store, opened with one: its rows stay as they are
    when put again, new states go to the bucket."""
    plain = await PostgresStore.open(postgres_url)
    try:
        assert await put(plain, k("old"), make_body(9))
    finally:
        await plain.close()
    before = await state_rows(postgres_url)
    store = await PostgresStore.open(postgres_url, blobs=bucket)
    try:
        assert await put(store, k("again", run="other"), make_body(9))
        assert await put(store, k("new"), make_body(10, shared=10))
        rows = await state_rows(postgres_url)
        assert {h: rows[h] for h in before} == before
        new = {h for h, (_n, x, _d) in rows.items() if x == 1}
        assert new and not new & set(before)
        assert new <= objects(bucket)
        for key, body in ((k("old"), make_body(9)), (k("again", run="other"), make_body(9)),
                          (k("new"), make_body(10, shared=10))):  # fmt: skip
            assert await store.get(key) == body
    finally:
        await store.close()


def test_the_blob_lock_key_is_a_positive_int64() -> None:
    assert 0 < postgres_sql.BLOB_LOCK < 2**63
    assert postgres_sql.BLOB_LOCK != postgres_sql.MIGRATION_LOCK


async def test_objects_of_states_kept_in_the_database_are_swept_and_a_store_without_blobs_says_so(
    postgres_url: str, bucket: S3Blobs, make_body: Body
) -> None:
    """A put that reuses a state stored before --blobs uploads its object but keeps the row:
    a sweep removes such objects (no external row needs them) and keeps the external ones. A
    store opened without blobs answers a state kept in the bucket with what to do."""
    plain = await PostgresStore.open(postgres_url)
    try:
        assert await put(plain, k("old"), make_body(9))
    finally:
        await plain.close()
    store = await PostgresStore.open(postgres_url, blobs=bucket)
    try:
        assert await put(store, k("again", run="other"), make_body(9))
        assert await put(store, k("new"), make_body(10, shared=10))
        rows = await state_rows(postgres_url)
        external = {h for h, (_n, x, _d) in rows.items() if x == 1}
        assert external and objects(bucket) >= external
        await store.sweep_blobs(0)
        assert objects(bucket) == external
        assert await store.get(k("new")) == make_body(10, shared=10)
    finally:
        await store.close()
    without = await PostgresStore.open(postgres_url)
    try:
        assert await without.get(k("old")) == make_body(9)  # its rows are in the database
        with pytest.raises(StoreError, match="start the server with --blobs"):
            await without.get(k("new"))
    finally:
        await without.close()
