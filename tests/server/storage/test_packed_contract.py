"""Entries packed against their run's dictionary (every backend): the exact bytes and the
same listings come back, a store opened again packs against the stored dictionary, the
dictionary goes with its run, and packed bytes that do not unpack are an error."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import psycopg
import pytest

import rngvault
from rngvault._errors import ConflictError, StoreError
from rngvault.server.storage import open_store
from rngvault.server.storage.base import Store
from rngvault.server.storage.content import PACKED, prepare
from rngvault.server.storage.deltas import decode_how

from .test_deltas_contract import every_step, key, put_all

pytestmark = pytest.mark.anyio


async def query(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` marks; ``%s`` for PostgreSQL) on the store's database."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            rows = conn.execute(sql, args).fetchall()
        conn.close()
        return rows
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as pg:
        cursor = await pg.execute(sql.replace("?", "%s"), args, binary=True)  # type: ignore[arg-type]
        return await cursor.fetchall() if cursor.description else []


async def test_entries_are_packed_and_come_back_byte_for_byte_with_their_listing(
    store_url: str,
) -> None:
    bodies = every_step(12)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies[:6])
    finally:
        await store.close()
    store = await open_store(store_url)  # a store opened again packs against the stored one
    try:
        await put_all(store, bodies, first=6)
        for step, body in enumerate(bodies):
            assert await store.get(key(step)) == body
        listed = (await store.list_snapshots("alice", "loop", limit=100)).items
        assert [(s.name, s.step) for s in listed] == [(f"step-{i}", i) for i in range(12)]
        assert listed[3].generators == tuple(
            (name, state.family) for name, state in rngvault.decode(bodies[3]).states.items()
        )
        rows = (await store.steps("alice", "loop", generator="py")).items
        assert [r.digest for r in rows] == [rngvault.decode(b).digest for b in bodies]
        assert all(r.state is not None for r in rows)
    finally:
        await store.close()
    assert await query(store_url, "SELECT count(*) FROM dictionaries") == [(1,)]
    stored = await query(store_url, "SELECT envelope, info FROM entries ORDER BY id")
    assert all(info.startswith(PACKED) for _e, info in stored)  # then the CRC-32
    plain = [prepare(b, rngvault.decode(b)) for b in bodies]
    packed = sum(len(bytes(e)) for e, _i in stored)
    assert packed * 3 < sum(len(p.envelope) + len(p.info) for p in plain)


async def test_a_reput_is_answered_from_the_packed_entry(store: Store) -> None:
    bodies = every_step(3)
    await put_all(store, bodies)
    first = rngvault.decode(bodies[0])
    assert not (await store.put(key(0), bodies[0], first)).created
    other = rngvault.decode(bodies[1])  # other states under a stored name
    with pytest.raises(ConflictError):
        await store.put(key(0), bodies[1], other)


async def test_a_runs_dictionary_goes_with_the_run(store_url: str) -> None:
    bodies = every_step(4)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
        await store.delete_run("alice", "loop")
        assert await query(store_url, "SELECT count(*) FROM dictionaries") == [(0,)]
        await put_all(store, bodies, first=2)  # a new run of the same name
        assert await query(store_url, "SELECT count(*) FROM dictionaries") == [(1,)]
        assert await store.get(key(3)) == bodies[3]
    finally:
        await store.close()


async def test_a_packed_entry_that_does_not_unpack_is_an_error(store_url: str) -> None:
    bodies = every_step(3)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
        await query(
            store_url,
            "UPDATE entries SET envelope = ? WHERE snapshot_id ="
            " (SELECT id FROM snapshots WHERE name = 'step-1')",
            (b"\xff\x00 not deflate",),
        )
        with pytest.raises(StoreError, match="does not unpack"):
            await store.get(key(1))
        with pytest.raises(StoreError, match="does not unpack"):
            await store.list_snapshots("alice", "loop")
        assert await store.get(key(2)) == bodies[2]
    finally:
        await store.close()


async def test_whole_states_compressed_and_deltas_described_as_before_come_back(
    store_url: str,
) -> None:
    """Whole states that compress are kept compressed; delta rows stored before with their
    description as JSON ``[form, how]`` still rebuild; a compressed state that does not
    decompress is an error naming it."""
    bodies = every_step(10)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
    finally:
        await store.close()
    compressed = await query(store_url, "SELECT hash, data FROM states WHERE how = 'z'")
    assert compressed  # the python state: 625 numbers, most of them short
    deltas = await query(store_url, "SELECT hash, how FROM states WHERE base IS NOT NULL")
    assert deltas
    for digest, how in deltas:
        old = json.dumps(list(decode_how(how)), separators=(",", ":"))
        await query(store_url, "UPDATE states SET how = ? WHERE hash = ?", (old, digest))
    store = await open_store(store_url)
    try:
        for step, body in enumerate(bodies):
            assert await store.get(key(step)) == body
        await query(
            store_url,
            "UPDATE states SET data = ? WHERE hash = ?",
            (b"not deflate", compressed[0][0]),
        )
        with pytest.raises(StoreError, match=bytes(compressed[0][0]).hex()[:8]):
            await store.get(key(0))
    finally:
        await store.close()
