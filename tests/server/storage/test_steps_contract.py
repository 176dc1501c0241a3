"""``Store.steps``, for every backend: a run's snapshots that recorded a step, by step, paged,
with their states digest and, on request, one generator's state hash."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from collections.abc import Callable

import msgpack
import numpy as np
import psycopg
import pytest

import rngvault
from rngvault import Metadata, NotFoundError
from rngvault._delta import decompress
from rngvault._split import split
from rngvault.server.storage import open_store
from rngvault.server.storage.base import InvalidCursorError, SnapshotKey, StepRow, Store
from rngvault.server.storage.content import prepare

pytestmark = pytest.mark.anyio

Body = Callable[..., bytes]


def with_step(body: bytes, step: int | None, **changes: object) -> bytes:
    """``body`` with another metadata.step (and other metadata ``changes``)."""
    snapshot = rngvault.decode(body)
    metadata = dataclasses.replace(snapshot.metadata, step=step, **changes)
    return rngvault.encode(dataclasses.replace(snapshot, metadata=metadata))


def state_hash(body: bytes, generator: str) -> str | None:
    """The SHA-256 hex of ``generator``'s state entry, as the local store's split keys it."""
    parts = split(body)
    for encoded, digest in parts.entries:
        if msgpack.unpackb(encoded) == generator:
            return digest
    return None


async def put(store: Store, name: str, body: bytes, run: str = "resnet") -> None:
    snapshot = rngvault.decode(body)
    await store.put(SnapshotKey("alice", run, name, snapshot.metadata.rank), body, snapshot)


async def every(store: Store, limit: int, **kwargs: object) -> list[StepRow]:
    """Every row, page by page (``limit`` a page), checking that cursors move on."""
    rows: list[StepRow] = []
    cursor = None
    while True:
        page = await store.steps("alice", "resnet", cursor=cursor, limit=limit, **kwargs)  # type: ignore[arg-type]
        assert len(page.items) <= limit
        rows += page.items
        if page.next_cursor is None:
            return rows
        assert page.next_cursor != cursor
        cursor = page.next_cursor


async def test_steps_list_by_step_then_in_stored_order_across_pages(
    store: Store, make_body: Body
) -> None:
    """Equal steps keep the order they were stored in, also when a page ends among them;
    snapshots without a step are not listed."""
    steps = [3, 1, 3, 2, 1, None, 3, 0]
    bodies = {f"s{i}": with_step(make_body(i), step) for i, step in enumerate(steps)}
    for name, body in bodies.items():
        await put(store, name, body)
    expected = [
        StepRow(step, name, rngvault.decode(bodies[name]).digest, None)
        for step, name in [
            (0, "s7"),
            (1, "s1"),
            (1, "s4"),
            (2, "s3"),
            (3, "s0"),
            (3, "s2"),
            (3, "s6"),
        ]
    ]
    for limit in (1, 2, 3, 7, 1000):
        assert await every(store, limit) == expected, limit
    whole = await store.steps("alice", "resnet")
    assert whole.items == tuple(expected) and whole.next_cursor is None


async def test_steps_page_through_a_longer_run(store: Store, make_body: Body) -> None:
    bodies = [make_body(i, step=1000 - 10 * i) for i in range(60)]
    for i, body in enumerate(bodies):
        await put(store, f"s{i:02}", body)
    rows = await every(store, 7)
    assert [r.step for r in rows] == sorted(1000 - 10 * i for i in range(60))
    assert [r.name for r in rows] == [f"s{i:02}" for i in reversed(range(60))]
    assert [r.digest for r in rows] == [rngvault.decode(b).digest for b in reversed(bodies)]


async def test_start_is_the_first_step_listed(store: Store, make_body: Body) -> None:
    for i in range(10):
        await put(store, f"s{i}", make_body(i, step=i * 2))
    assert [r.step for r in await every(store, 3, start=7)] == [8, 10, 12, 14, 16, 18]
    assert [r.step for r in await every(store, 3, start=8)] == [8, 10, 12, 14, 16, 18]
    assert [r.step for r in await every(store, 3, start=-5)] == list(range(0, 20, 2))
    assert await every(store, 3, start=19) == []


async def test_generator_state_hashes_are_those_of_the_state_entries(
    store: Store, make_body: Body
) -> None:
    """``moving`` changes every snapshot, ``fixed`` never; a snapshot without the generator
    lists None; without ``generator`` every state is None."""
    bodies = [make_body(i, step=i) for i in range(5)]
    lone = rngvault.encode(
        dataclasses.replace(
            rngvault.capture(
                {"fixed": random.Random(0), "other": np.random.default_rng(9)},
                include_globals=False,
                metadata=Metadata(step=2, metrics={"loss": float("nan")}),
            ),
            created=1_700_000_100.0,
        )
    )
    for i, body in enumerate(bodies):
        await put(store, f"s{i}", body)
    await put(store, "lone", lone)
    order = [*bodies[:3], lone, *bodies[3:]]
    for generator in ("moving", "fixed", "legacy", "other", "nowhere"):
        rows = await every(store, 2, generator=generator)
        assert [r.state for r in rows] == [state_hash(b, generator) for b in order], generator
    assert len({r.state for r in await every(store, 10, generator="moving")}) == 6  # lone: None
    assert len({r.state for r in await every(store, 10, generator="fixed")}) == 1
    assert {r.state for r in await every(store, 10)} == {None}


async def test_steps_list_one_rank_at_a_time(store: Store, make_body: Body) -> None:
    for i in range(4):
        await put(store, f"s{i}", make_body(i, step=i, world_size=2))
        if i % 2 == 0:
            await put(store, f"s{i}", make_body(100 + i, step=i, rank=1, world_size=2))
    assert [r.name for r in await every(store, 10)] == ["s0", "s1", "s2", "s3"]
    rank1 = await every(store, 1, rank=1, generator="moving")
    assert [r.name for r in rank1] == ["s0", "s2"]
    assert [r.digest for r in rank1] == [
        rngvault.decode(make_body(100 + i, step=i, rank=1, world_size=2)).digest for i in (0, 2)
    ]
    assert await every(store, 10, rank=2) == []


async def test_steps_past_int64_are_listed_exactly(store: Store, make_body: Body) -> None:
    """msgpack steps reach 2**64 - 1: listed with their own value, after every int64 step."""
    huge = [2**64 - 1, 2**63, 2**63 - 1]
    for i, step in enumerate(huge):
        await put(store, f"h{i}", make_body(i, step=step))
    await put(store, "small", make_body(5, step=-(2**63)))
    assert next(r.step for r in await every(store, 1)) == -(2**63)
    assert sorted(r.step for r in await every(store, 1)) == sorted([*huge, -(2**63)])
    assert [r.name for r in await every(store, 2, start=2**63 + 1)] == ["h0"]


async def test_an_unknown_run_is_not_found_and_a_forged_cursor_is_refused(
    store: Store, make_body: Body
) -> None:
    with pytest.raises(NotFoundError):
        await store.steps("alice", "resnet")
    await put(store, "s0", make_body(0))
    with pytest.raises(NotFoundError):
        await store.steps("alice", "other")
    with pytest.raises(NotFoundError):
        await store.steps("bob", "resnet")
    for bad in ("nonsense", "W10", "WzFd", "WyJhIiwxXQ", "Wzk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5LDFd"):
        with pytest.raises(InvalidCursorError):
            await store.steps("alice", "resnet", cursor=bad)


DOWNGRADE = (
    "ALTER TABLE states DROP COLUMN external",
    "ALTER TABLE runs DROP COLUMN record",
    "DROP TABLE dictionaries",
    "DROP INDEX states_by_base",
    "ALTER TABLE states DROP COLUMN how",
    "ALTER TABLE states DROP COLUMN base",
    "DROP INDEX entries_by_step",
    "ALTER TABLE entries DROP COLUMN run_id",
    "ALTER TABLE entries DROP COLUMN step",
    "DELETE FROM schema_version WHERE version > 1",
)


async def to_first_schema(store_url: str, bodies: dict[str, bytes]) -> None:
    """Take a database back to the first schema (entries without run and step, their
    envelope, info, body hash and hex digest plain; states uncompressed, SQLite's keyed by
    their whole SHA-256), as a server of that schema left it."""
    plain = []
    for name, body in bodies.items():
        prepared = prepare(body, rngvault.decode(body))
        plain.append(
            (prepared.envelope, prepared.info, prepared.body_sha256, prepared.digest, name)
        )
    rewrite = (
        "UPDATE entries SET envelope = {0}, info = {0}, body_sha256 = {0}, digest = {0}"
        " WHERE snapshot_id = (SELECT id FROM snapshots WHERE name = {0})"
    )
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        with conn:
            conn.executemany(rewrite.format("?"), plain)
            compressed = conn.execute("SELECT id, data FROM states WHERE how = 'z'").fetchall()
            conn.executemany(
                "UPDATE states SET data = ?, how = NULL WHERE id = ?",
                [(decompress(data), row_id) for row_id, data in compressed],
            )
            conn.execute("UPDATE states SET hash = coalesce(sha256, hash)")
            conn.execute("ALTER TABLE states DROP COLUMN sha256")
            for statement in DOWNGRADE:
                conn.execute(statement)
        conn.close()
        return
    async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as pg:
        async with pg.cursor() as cursor:
            await cursor.executemany(rewrite.format("%s"), plain)
            await cursor.execute("SELECT hash, data FROM states WHERE how = 'z'", binary=True)
            compressed = await cursor.fetchall()
            await cursor.executemany(
                "UPDATE states SET data = %s, how = NULL WHERE hash = %s",
                [(decompress(bytes(data)), bytes(h)) for h, data in compressed],
            )
        for statement in DOWNGRADE:
            await pg.execute(statement)


async def test_a_database_of_the_first_schema_migrates_and_lists_its_steps(
    store_url: str, make_body: Body
) -> None:
    """Rows stored before entries had an indexed step (schema 1) list once the store is
    opened by this rngvault: steps read from their metadata, null and past-int64 ones too."""
    bodies = {
        "a": make_body(1, step=5),
        "b": with_step(make_body(2), None),
        "c": with_step(make_body(3), 2**64 - 1, metrics={"loss": float("nan")}),
        "d": make_body(4, step=-3),
        "e": make_body(5, step=5),
    }
    for name, body in bodies.items():  # a store opened anew keeps a run's first states whole
        old = await open_store(store_url)
        try:
            await put(old, name, body)
        finally:
            await old.close()
    await to_first_schema(store_url, bodies)
    store = await open_store(store_url)
    try:
        rows = await every(store, 2, generator="moving")
        assert [(r.name, r.step) for r in rows] == [
            ("d", -3),
            ("a", 5),
            ("e", 5),
            ("c", 2**64 - 1),
        ]
        assert [r.state for r in rows] == [state_hash(bodies[r.name], "moving") for r in rows]
        assert [r.digest for r in rows] == [rngvault.decode(bodies[r.name]).digest for r in rows]
        await put(store, "f", make_body(6, step=0))
        assert [r.name for r in await every(store, 10)] == ["d", "f", "a", "e", "c"]
        for name, body in bodies.items():
            assert await store.get(SnapshotKey("alice", "resnet", name)) == body
    finally:
        await store.close()
