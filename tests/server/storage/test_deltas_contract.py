"""States stored as deltas from a whole base state (every backend): the exact bytes come
back, bases outlive the snapshots that held them while a delta needs them, a delta that
does not rebuild its state is an error naming it, and a restarted store starts new bases."""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import psycopg
import pytest

import rngvault
from rngvault import Metadata
from rngvault._errors import StoreError
from rngvault.server.storage import open_store
from rngvault.server.storage.base import SnapshotKey, Store

pytestmark = pytest.mark.anyio


def every_step(count: int, seed: int = 0) -> list[bytes]:
    """Snapshots of a small loop at each of ``count`` steps (python, NumPy legacy, PCG64)."""
    py, legacy = random.Random(seed), np.random.RandomState(seed)
    augment = np.random.default_rng(seed)
    bodies = []
    for step in range(count):
        py.random()
        legacy.random_sample(7 + step % 3)
        augment.normal(size=5)
        snap = rngvault.capture(
            {"py": py, "legacy": legacy, "augment": augment},
            include_globals=False,
            metadata=Metadata(step=step),
        )
        bodies.append(rngvault.encode(snap))
    return bodies


def key(step: int) -> SnapshotKey:
    return SnapshotKey("alice", "loop", f"step-{step}")


async def put_all(store: Store, bodies: list[bytes], first: int = 0) -> None:
    for step, body in enumerate(bodies[first:], first):
        assert (await store.put(key(step), body, rngvault.decode(body))).created


async def state_rows(url: str) -> tuple[int, int]:
    """(whole state rows, delta rows) in the database."""
    query = "SELECT count(*) FILTER (WHERE base IS NULL), count(base) FROM states"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        found = conn.execute(
            "SELECT sum(base IS NULL), sum(base IS NOT NULL) FROM states"
        ).fetchone()
        conn.close()
        return int(found[0] or 0), int(found[1] or 0)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as pg:
        cursor = await pg.execute(query)
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


async def test_a_run_of_many_steps_comes_back_byte_for_byte_mostly_as_deltas(
    store_url: str,
) -> None:
    bodies = every_step(40)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
        for step, body in enumerate(bodies):
            assert await store.get(key(step)) == body
    finally:
        await store.close()
    wholes, deltas = await state_rows(store_url)
    assert wholes == 3  # each generator's first state; the 117 others are deltas
    assert deltas == 3 * 39


async def test_deleting_the_snapshots_that_held_the_bases_keeps_later_deltas_readable(
    store_url: str,
) -> None:
    bodies = every_step(12)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
        for step in range(6):  # step 0 held every base
            await store.delete_snapshot("alice", "loop", f"step-{step}")
        for step in range(6, 12):
            assert await store.get(key(step)) == bodies[step]
        collected = await store.collect("alice/loop", keep_last=2)
        assert collected.snapshots == 4
        assert [await store.get(key(s)) for s in (10, 11)] == bodies[10:]
        assert await state_rows(store_url) == (3, 3 * 2)  # the bases, the kept deltas
        await store.delete_run("alice", "loop")
        assert await state_rows(store_url) == (0, 0)  # nothing is left behind
    finally:
        await store.close()


async def test_a_reopened_store_stores_each_generators_first_state_whole(
    store_url: str,
) -> None:
    bodies = every_step(10)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies[:5])
    finally:
        await store.close()
    store = await open_store(store_url)
    try:
        await put_all(store, bodies, first=5)
        assert [await store.get(key(s)) for s in range(10)] == bodies
    finally:
        await store.close()
    assert await state_rows(store_url) == (6, 3 * 8)


async def test_a_delta_that_does_not_rebuild_its_state_is_an_error_naming_it(
    store_url: str,
) -> None:
    bodies = every_step(3)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
        if store_url.startswith("sqlite"):
            conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
            with conn:
                conn.execute("UPDATE states SET data = zeroblob(length(data)) WHERE base NOTNULL")
            conn.close()
        else:
            async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as pg:
                await pg.execute(
                    "UPDATE states SET data = decode(repeat('00', length(data)), 'hex')"
                    " WHERE base IS NOT NULL"
                )
        assert await store.get(key(0)) == bodies[0]  # whole states are untouched
        with pytest.raises(StoreError, match=r"state [0-9a-f]{64} "):
            await store.get(key(2))
    finally:
        await store.close()
