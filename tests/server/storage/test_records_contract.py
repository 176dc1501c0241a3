"""Run records in every backend: written once, ``{}`` for a run without, a record may create
its run; and a database of schema 4 migrates with its runs reading ``{}``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable

import psycopg
import pytest

import rngvault
from rngvault import NotFoundError
from rngvault._record import record_json
from rngvault.server.storage import migrations, open_store
from rngvault.server.storage.base import SnapshotKey, Store

pytestmark = pytest.mark.anyio

Body = Callable[..., bytes]
FIRST = record_json({"seed": 3407, "config": {"lr": 0.1, "name": "résumé"}, "host": "a"})
SECOND = record_json({"seed": 17, "config": {"lr": 0.2}, "host": "b"})


async def put(store: Store, run: str, name: str, body: bytes, namespace: str = "alice") -> None:
    await store.put(SnapshotKey(namespace, run, name), body, rngvault.decode(body))


async def test_a_record_is_kept_once_and_a_later_one_answers_with_it(store: Store) -> None:
    assert await store.put_record("alice", "resnet", FIRST) == (True, FIRST)
    assert await store.put_record("alice", "resnet", SECOND) == (False, FIRST)
    assert await store.put_record("alice", "resnet", FIRST) == (False, FIRST)
    _info, record = await store.run_info("alice", "resnet")
    assert json.loads(record)["config"]["name"] == "résumé"
    assert record == FIRST


async def test_a_run_without_a_record_reads_empty_and_then_takes_one(
    store: Store, make_body: Body
) -> None:
    await put(store, "resnet", "epoch1", make_body(1))
    info, record = await store.run_info("alice", "resnet")
    assert record == "{}"
    assert (info.namespace, info.run, info.snapshots) == ("alice", "resnet", 1)
    assert await store.put_record("alice", "resnet", FIRST) == (True, FIRST)
    info_after, record = await store.run_info("alice", "resnet")
    assert record == FIRST
    assert info_after == info  # a record changes neither counts nor times


async def test_an_unknown_run_is_not_found(store: Store, make_body: Body) -> None:
    await put(store, "resnet", "epoch1", make_body(1))
    for namespace, run in (("alice", "other"), ("bob", "resnet")):
        with pytest.raises(NotFoundError, match=f"no run {namespace}/{run}"):
            await store.run_info(namespace, run)


async def test_a_record_creates_its_run_which_lists_with_no_snapshot_then_takes_them(
    store: Store, make_body: Body
) -> None:
    assert await store.put_record("alice", "fresh", FIRST) == (True, FIRST)
    (listed,) = (await store.list_runs()).items
    assert (listed.namespace, listed.run, listed.snapshots) == ("alice", "fresh", 0)
    assert not (await store.list_snapshots("alice", "fresh")).items
    await put(store, "fresh", "epoch1", make_body(1))
    info, record = await store.run_info("alice", "fresh")
    assert (info.snapshots, record) == (1, FIRST)
    assert await store.count_snapshots() == 1


async def test_deleting_a_run_with_only_a_record_removes_it(store: Store) -> None:
    await store.put_record("alice", "fresh", FIRST)
    assert await store.delete_run("alice", "fresh") == 0
    with pytest.raises(NotFoundError):
        await store.run_info("alice", "fresh")
    assert not (await store.list_runs()).items


async def test_a_record_goes_with_its_runs_last_snapshot_and_survives_retention_alone(
    store: Store, make_body: Body
) -> None:
    await put(store, "resnet", "epoch1", make_body(1))
    await store.put_record("alice", "resnet", FIRST)
    await store.put_record("alice", "only", SECOND)
    collected = await store.collect("alice/*", keep_last=0)
    assert (collected.runs, collected.snapshots) == (2, 1)
    with pytest.raises(NotFoundError):
        await store.run_info("alice", "resnet")
    assert (await store.run_info("alice", "only"))[1] == SECOND


async def test_records_written_at_once_keep_exactly_one(store: Store) -> None:
    records = [record_json({"seed": seed}) for seed in range(8)]
    answers = await asyncio.gather(*(store.put_record("alice", "race", r) for r in records))
    kept = {stored for _created, stored in answers}
    assert len(kept) == 1
    assert sum(created for created, _stored in answers) == 1
    assert (await store.run_info("alice", "race"))[1] in kept


async def to_schema_4(store_url: str) -> None:
    """Take a database back to schema 4, as a server before run records left it."""
    statements = (
        "ALTER TABLE states DROP COLUMN external",
        "ALTER TABLE runs DROP COLUMN record",
        "DELETE FROM schema_version WHERE version > 4",
    )
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        with conn:
            for statement in statements:
                conn.execute(statement)
        conn.close()
        return
    async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as pg:
        for statement in statements:
            await pg.execute(statement)


async def test_a_schema_4_database_migrates_and_its_runs_read_an_empty_record(
    store_url: str, make_body: Body
) -> None:
    assert len(migrations.load("sqlite")) == len(migrations.load("postgresql")) >= 5
    old = await open_store(store_url)
    try:
        await put(old, "r1", "epoch1", make_body(1))
        await put(old, "r2", "epoch1", make_body(2), namespace="bob")
    finally:
        await old.close()
    await to_schema_4(store_url)
    store = await open_store(store_url)
    try:
        for namespace, run in (("alice", "r1"), ("bob", "r2")):
            info, record = await store.run_info(namespace, run)
            assert (info.snapshots, record) == (1, "{}")
        assert await store.put_record("alice", "r1", FIRST) == (True, FIRST)
        assert (await store.run_info("bob", "r2"))[1] == "{}"
    finally:
        await store.close()
