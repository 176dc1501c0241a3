"""What a backend keeps is checked when read (every backend): an entry too large to pack is
kept plain and reads back, a run's dictionary stays small, damage to a dictionary, a packed
or plain entry or a whole state is a StoreError naming the snapshot, never other bytes; the
PostgreSQL backend rebuilds and encodes states off the event loop."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

import rngvault
from rngvault import Metadata
from rngvault._errors import StoreError
from rngvault.server.storage import open_store, postgres_sql
from rngvault.server.storage.base import SnapshotKey
from rngvault.server.storage.content import PACKED, WINDOW, prepare
from rngvault.server.storage.deltas import Chains

from .test_deltas_contract import every_step, key, put_all
from .test_packed_contract import query

pytestmark = pytest.mark.anyio


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


async def test_a_snapshot_with_a_huge_tag_is_kept_plain_and_reads_back(store_url: str) -> None:
    """11 MiB of "\\x01" is 66 MiB of listing JSON: packed, it could not be read back."""
    snap = rngvault.capture(
        {"py": random.Random(0)},
        include_globals=False,
        metadata=Metadata(step=1, tags=("\x01" * (11 * 2**20),)),
    )
    huge = rngvault.encode(snap)
    small = every_step(2)
    store = await open_store(store_url)
    try:
        assert (await store.put(SnapshotKey("alice", "loop", "huge"), huge, snap)).created
        await put_all(store, small)
        assert await store.get(SnapshotKey("alice", "loop", "huge")) == huge
        assert not (await store.put(SnapshotKey("alice", "loop", "huge"), huge, snap)).created
        listed = (await store.list_snapshots("alice", "loop")).items
        assert [s.name for s in listed] == ["huge", "step-0", "step-1"]
        assert listed[0].tags == snap.metadata.tags
        for step, body in enumerate(small):
            assert await store.get(key(step)) == body
    finally:
        await store.close()
    infos = [i for (i,) in await query(store_url, "SELECT info FROM entries ORDER BY id")]
    assert infos[0].startswith("{") and all(i.startswith(PACKED) for i in infos[1:])
    (size,) = (await query(store_url, "SELECT length(data) FROM dictionaries"))[0]
    assert size <= WINDOW


async def assert_never_other_bytes(
    store_url: str,
    table: str,
    where: str,
    bodies: list[bytes],
    column: str = "data",
    args: tuple[Any, ...] = (),
) -> None:
    """Flip bytes across ``column`` of the row of ``table`` matching ``where``: every read
    gives the stored bytes or a StoreError naming the snapshot, and some are errors."""
    ((original,),) = await query(store_url, f"SELECT {column} FROM {table} WHERE {where}", args)
    original = bytes(original)
    errors = 0
    for at in range(0, len(original), max(1, len(original) // 40)):
        await query(
            store_url,
            f"UPDATE {table} SET {column} = ? WHERE {where}",
            (flipped(original, at), *args),
        )
        store = await open_store(store_url)
        try:
            for step, body in enumerate(bodies):
                try:
                    assert await store.get(key(step)) == body, (table, at, step)
                except StoreError as exc:
                    assert f"'step-{step}' rank 0 of alice/loop" in str(exc)
                    errors += 1
        finally:
            await store.close()
    await query(store_url, f"UPDATE {table} SET {column} = ? WHERE {where}", (original, *args))
    assert errors


async def test_a_damaged_dictionary_or_packed_entry_is_an_error_not_other_bytes(
    store_url: str,
) -> None:
    bodies = every_step(3)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
    finally:
        await store.close()
    await assert_never_other_bytes(store_url, "dictionaries", "1 = 1", bodies)
    entry = "snapshot_id = (SELECT id FROM snapshots WHERE name = 'step-1')"
    await assert_never_other_bytes(store_url, "entries", entry, bodies, "envelope")
    store = await open_store(store_url)
    try:
        for step, body in enumerate(bodies):
            assert await store.get(key(step)) == body
    finally:
        await store.close()


async def test_a_damaged_plain_entry_or_whole_state_is_an_error_not_other_bytes(
    store_url: str,
) -> None:
    """A plain entry is checked by its body's SHA-256, a whole state row by its own."""
    bodies = every_step(2)
    store = await open_store(store_url)
    try:
        await put_all(store, bodies)
    finally:
        await store.close()
    rows = await query(store_url, "SELECT hash FROM states WHERE base IS NULL AND how IS NULL")
    assert rows  # the PCG64 state does not compress
    await assert_never_other_bytes(
        store_url, "states", "hash = ?", bodies, args=(bytes(rows[0][0]),)
    )
    # an entry as stored before packing: plain, with its body's SHA-256
    snap = rngvault.decode(bodies[0])
    envelope = prepare(bodies[0], snap)
    await query(
        store_url,
        "UPDATE entries SET envelope = ?, info = ?, body_sha256 = ? WHERE snapshot_id ="
        " (SELECT id FROM snapshots WHERE name = 'step-0')",
        (envelope.envelope, envelope.info, envelope.body_sha256),
    )
    entry = "snapshot_id = (SELECT id FROM snapshots WHERE name = 'step-0')"
    await assert_never_other_bytes(store_url, "entries", entry, bodies[:1], "envelope")


async def test_postgres_rebuilds_and_encodes_states_off_the_event_loop(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, set[Any]] = {"rebuild": set(), "encode": set()}
    rebuild, encode = postgres_sql.rebuild, Chains.encode

    def recorded_rebuild(*args: Any) -> bytes:
        threads["rebuild"].add(threading.current_thread())
        return rebuild(*args)

    def recorded_encode(self: Chains, *args: Any) -> Any:
        threads["encode"].add(threading.current_thread())
        return encode(self, *args)

    monkeypatch.setattr(postgres_sql, "rebuild", recorded_rebuild)
    monkeypatch.setattr(Chains, "encode", recorded_encode)
    bodies = every_step(6)
    store = await open_store(postgres_url)
    try:
        loop_thread = threading.current_thread()
        await put_all(store, bodies)
        for step, body in enumerate(bodies):
            assert await store.get(key(step)) == body
    finally:
        await store.close()
    assert threads["rebuild"] and threads["encode"]  # deltas were written and rebuilt
    assert loop_thread not in threads["rebuild"] | threads["encode"]
