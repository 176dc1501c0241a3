"""PostgreSQL-specific guarantees: concurrent migration, deduplication and blob cleanup under
racing deletes, commit-ordered listing, error mapping, lost connections, URLs, connection
settings, and deletes in bounded transactions that lose no concurrent put."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from tests._postgres import HOW_TO, PostgresServer

psycopg = pytest.importorskip("psycopg", reason=f"psycopg is not installed: {HOW_TO}")

import rngvault  # noqa: E402
from rngvault._errors import StoreError  # noqa: E402
from rngvault.server.storage import migrations, open_store, postgres_sql  # noqa: E402
from rngvault.server.storage.base import SnapshotKey, StoreFullError  # noqa: E402
from rngvault.server.storage.content import prepare  # noqa: E402
from rngvault.server.storage.postgres import (  # noqa: E402
    KEEPALIVES,
    PostgresStore,
    connect_args,
    conninfo,
    map_error,
)
from rngvault.server.storage.postgres_sql import like_pattern  # noqa: E402
from rngvault.server.storage.postgres_sql import put as sql_put  # noqa: E402

pytestmark = pytest.mark.anyio

Body = Callable[..., bytes]
TABLES = ("states", "entry_states", "entries", "snapshots", "runs")


def k(name: str, run: str = "r", namespace: str = "ns", rank: int = 0) -> SnapshotKey:
    return SnapshotKey(namespace, run, name, rank)


async def put(store: PostgresStore, key: SnapshotKey, body: bytes) -> bool:
    return (await store.put(key, body, rngvault.decode(body))).created


async def counts(url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        found = {}
        for table in TABLES:
            row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
            assert row is not None
            found[table] = row[0]
        return found


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(postgres_url)
    try:
        yield store
    finally:
        await store.close()


async def test_replicas_opening_a_fresh_database_at_once_migrate_it_exactly_once(
    postgres: PostgresServer, make_body: Body
) -> None:
    expected = [(m.version, m.name) for m in migrations.load("postgresql")]
    for _round in range(3):
        url = postgres.create_database()
        opened = await asyncio.gather(
            *(PostgresStore.open(url) for _ in range(6)), return_exceptions=True
        )
        stores = [s for s in opened if isinstance(s, PostgresStore)]
        try:
            assert len(stores) == 6, [repr(e) for e in opened if isinstance(e, BaseException)]
            async with await psycopg.AsyncConnection.connect(url) as conn:
                cursor = await conn.execute("SELECT version, name FROM schema_version ORDER BY 1")
                assert await cursor.fetchall() == expected
            body = make_body(1)
            assert [await put(s, k("a"), body) for s in stores] == [True] + [False] * 5
        finally:
            for store in stores:
                await store.close()
            postgres.drop_database(url)


async def test_identical_states_are_stored_once_and_deletes_remove_unreferenced_ones(
    pg_store: PostgresStore, postgres_url: str, make_body: Body
) -> None:
    for i in range(10):
        await put(pg_store, k(f"s{i}", run=f"run{i % 2}"), make_body(i, shared=3))
    # 10 distinct "moving" states + one "fixed" + one "legacy" shared by all ten.
    assert (await counts(postgres_url))["states"] == 12
    await pg_store.delete_snapshot("ns", "run0", "s0")
    assert (await counts(postgres_url))["states"] == 11
    await pg_store.delete_run("ns", "run0")
    await pg_store.delete_run("ns", "run1")
    assert await counts(postgres_url) == dict.fromkeys(TABLES, 0)


async def test_deletes_racing_puts_that_share_state_blobs_lose_nothing_and_leave_no_orphans(
    pg_store: PostgresStore, postgres_url: str, make_body: Body
) -> None:
    """Run "keep" gets new snapshots while run "drop" (same shared states) is deleted one
    snapshot at a time: every kept snapshot stays exact, and no blob is left unreferenced."""
    for i in range(40):
        await put(pg_store, k(f"d{i}", run="drop"), make_body(1000 + i, shared=9))
    kept = {k(f"k{i}", run="keep"): make_body(i, shared=9) for i in range(40)}

    async def writer(half: int) -> None:
        for key, body in list(kept.items())[half::2]:
            assert await put(pg_store, key, body)

    async def deleter() -> None:
        for i in range(40):
            assert await pg_store.delete_snapshot("ns", "drop", f"d{i}") == 1

    await asyncio.gather(writer(0), writer(1), deleter())
    for key, body in kept.items():
        assert await pg_store.get(key) == body
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM states s WHERE NOT EXISTS"
            " (SELECT 1 FROM entry_states es WHERE es.state_hash = s.hash)"
        )
        assert await cursor.fetchone() == (0,)
    assert [r.run for r in (await pg_store.list_runs()).items] == ["keep"]


async def test_a_put_waits_for_the_runs_earlier_put_so_listing_follows_commit_order(
    pg_store: PostgresStore, postgres_url: str, make_body: Body
) -> None:
    """A transaction that stored "first" but has not committed holds the run: a later put
    commits after it, so a cursor taken meanwhile can never skip "first"."""
    await put(pg_store, k("s0"), make_body(0))
    first = make_body(1)
    async with (
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as watch,
    ):
        async with conn.transaction():
            await sql_put(conn, k("first"), prepare(first, rngvault.decode(first)))
            second = asyncio.create_task(put(pg_store, k("second"), make_body(2)))
            for _ in range(400):  # until the second put waits for a lock (20 s at most)
                cursor = await watch.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if await cursor.fetchone() == (1,):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the second put never waited for the first")
            assert not second.done()
            page = await pg_store.list_snapshots("ns", "r", limit=1)
            assert [s.name for s in page.items] == ["s0"] and page.next_cursor is None
        assert await second
    listed = await pg_store.list_snapshots("ns", "r")
    assert [s.name for s in listed.items] == ["s0", "first", "second"]
    assert (await pg_store.list_runs()).items[0].snapshots == 3


async def test_namespace_patterns_match_only_star_and_question_mark(
    pg_store: PostgresStore, make_body: Body
) -> None:
    for namespace in ("team_a", "teamXa", "team-b", "t%m"):
        await put(pg_store, k("s", namespace=namespace), make_body(1))
    found = await pg_store.list_runs(pattern="team_?")
    assert [r.namespace for r in found.items] == ["team_a"]
    found = await pg_store.list_runs(pattern="t%*")
    assert [r.namespace for r in found.items] == ["t%m"]
    assert like_pattern("a_b*c?%") == "a\\_b%c_\\%"


async def test_a_lost_connection_is_retried_and_an_unreachable_database_is_a_store_error(
    pg_store: PostgresStore, postgres: PostgresServer, postgres_url: str, make_body: Body
) -> None:
    await put(pg_store, k("a"), make_body(1))
    database = postgres_url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(postgres.url(), autocommit=True) as admin:
        terminate = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        await admin.execute(terminate, (database,))
        assert await pg_store.get(k("a")) == make_body(1)  # the pool reconnects
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(terminate, (database,))
        try:
            with pytest.raises(StoreError, match="PostgreSQL is unavailable") as caught:
                await pg_store.get(k("a"))
            assert type(caught.value) is StoreError
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    await pg_store.check()
    assert await pg_store.get(k("a")) == make_body(1)


def test_psycopg_errors_map_to_the_rngvault_error_tree() -> None:
    full = map_error(psycopg.errors.DiskFull("could not extend file: No space left on device"))
    assert isinstance(full, StoreFullError) and "nothing was written" in str(full)
    lost = map_error(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert type(lost) is StoreError and "unavailable" in str(lost)
    other = map_error(psycopg.errors.UndefinedTable('relation "runs" does not exist'))
    assert type(other) is StoreError and "UndefinedTable" in str(other)


def test_urls_are_normalised_for_libpq_and_bad_ones_are_refused_without_the_password() -> None:
    assert conninfo("postgres://u@h/db") == "postgresql://u@h/db"
    assert conninfo("postgresql+psycopg://u@h:5/db?sslmode=require") == (
        "postgresql://u@h:5/db?sslmode=require"
    )
    with pytest.raises(StoreError, match="write postgresql://user@host:5432/database") as bad:
        conninfo("postgresql://u:s3cret@h/")
    assert "s3cret" not in str(bad.value)


async def test_an_unreachable_server_fails_to_open_with_the_reason_and_no_password() -> None:
    with pytest.raises(StoreError, match="cannot open the PostgreSQL database") as caught:
        await open_store("postgresql://u:s3cret@127.0.0.1:9/db?connect_timeout=5")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_error_answers_leave_out_the_servers_file_paths_and_the_log_keeps_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    full_disk = [
        'could not extend file "base/16384/16397": No space left on device',
        'could not write to file "pg_wal/xlogtemp.4242": No space left on device',
        'could not extend file "pg_tblspc/16385/PG_16_202307071/16384/16397.1": No space left'
        " on device",
        "could not create directory /var/lib/postgresql/16/main/base/pgsql_tmp: No space left"
        " on device",
    ]
    with caplog.at_level(logging.WARNING, logger="rngvault.server"):
        for message in full_disk:
            full = map_error(psycopg.errors.DiskFull(message))
            assert isinstance(full, StoreFullError) and "nothing was written" in str(full)
            assert "No space left on device" in str(full) and "/" not in str(full), full
        other = map_error(psycopg.errors.DataCorrupted('could not read block 3 in file "base/1/2"'))
        assert "base/1/2" not in str(other) and "could not read block 3" in str(other)
    assert "pg_wal/xlogtemp.4242" in caplog.text and "base/1/2" in caplog.text
    busy = map_error(psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"))
    assert type(busy) is StoreError and "busy" in str(busy) and "retry" in str(busy)


def test_connection_defaults_yield_to_the_urls_own_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGOPTIONS", raising=False)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    plain = connect_args("postgresql://u@h/db", server_options="-c lock_timeout=1s")
    assert plain == {"connect_timeout": 10, **KEEPALIVES, "options": "-c lock_timeout=1s"}
    assert "options" not in connect_args("postgresql://u@h/db")
    url = "postgresql://u@h/db?options=-c%20lock_timeout%3D2s&keepalives_idle=5&connect_timeout=3"
    given = connect_args(url, server_options="-c lock_timeout=1s")
    assert "connect_timeout" not in given and "keepalives_idle" not in given
    assert given["keepalives"] == 1
    assert given["options"] == "-c lock_timeout=1s -c lock_timeout=2s"  # the last one wins
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=4s")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    from_env = connect_args(url.split("?")[0], server_options="-c lock_timeout=1s")
    assert from_env["options"] == "-c lock_timeout=1s -c lock_timeout=4s"
    assert "connect_timeout" not in from_env


async def test_pooled_connections_carry_the_timeouts_and_keepalives(postgres_url: str) -> None:
    """The server applies the default timeouts, a URL's own options override them, and the
    client-side bound follows the statement timeout in force."""
    store = await PostgresStore.open(postgres_url + "?options=-c%20lock_timeout%3D7s")
    try:
        async with store._pool.connection() as conn:
            shown = {}
            for name in (
                "lock_timeout",
                "statement_timeout",
                "idle_in_transaction_session_timeout",
            ):
                row = await (await conn.execute(f"SHOW {name}")).fetchone()
                assert row is not None
                shown[name] = row[0]
            parameters = conn.info.get_parameters()
        assert shown == {
            "lock_timeout": "7s",
            "statement_timeout": "5s",
            "idle_in_transaction_session_timeout": "30s",
        }
        assert parameters["keepalives"] == "1" and parameters["keepalives_idle"] == "30"
        assert store._call_limit == 5 + 3
    finally:
        await store.close()


LOG_DELETES = """
CREATE TABLE deleted_log (txid BIGINT NOT NULL);
CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO deleted_log VALUES (txid_current()); RETURN OLD; END $$;
CREATE TRIGGER log_delete AFTER DELETE ON snapshots FOR EACH ROW EXECUTE FUNCTION log_delete();
"""


async def log_deletes(url: str) -> None:
    """Record the transaction of every snapshot deleted from now on (test instrumentation)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(LOG_DELETES)


async def deletes_per_transaction(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM deleted_log GROUP BY txid ORDER BY min(txid)"
        )
        return [row[0] for row in await cursor.fetchall()]


async def first_delete_committed(url: str) -> None:
    for _ in range(400):  # 20 s at most
        if await deletes_per_transaction(url):
            return
        await asyncio.sleep(0.05)
    pytest.fail("no delete was committed")


async def orphans_and_miscounted_runs(url: str) -> tuple[int, int]:
    """(blobs no entry refers to, runs whose counter differs from their snapshots)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM states s WHERE NOT EXISTS"
            "   (SELECT 1 FROM entry_states es WHERE es.state_hash = s.hash)),"
            " (SELECT count(*) FROM runs r WHERE r.snapshots <>"
            "   (SELECT count(*) FROM snapshots s WHERE s.run_id = r.id))"
        )
        row = await cursor.fetchone()
        assert row is not None
        return row[0], row[1]


async def test_a_runs_delete_goes_in_bounded_transactions_and_keeps_a_put_made_meanwhile(
    pg_store: PostgresStore, postgres_url: str, make_body: Body, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_sql, "BATCH", 20)
    for i in range(70):
        await put(pg_store, k(f"s{i}"), make_body(i, shared=1))
    await log_deletes(postgres_url)
    deleting = asyncio.ensure_future(pg_store.delete_run("ns", "r"))
    await first_delete_committed(postgres_url)
    assert await put(pg_store, k("late"), make_body(0, shared=1))  # shares s0's states
    assert await deleting == 70
    assert await deletes_per_transaction(postgres_url) == [20, 20, 20, 10]
    assert [s.name for s in (await pg_store.list_snapshots("ns", "r")).items] == ["late"]
    assert await pg_store.get(k("late")) == make_body(0, shared=1)
    assert await orphans_and_miscounted_runs(postgres_url) == (0, 0)
    assert (await counts(postgres_url))["states"] == 3


async def test_puts_during_a_batched_collect_stay_exact_and_leave_no_orphans(
    pg_store: PostgresStore, postgres_url: str, make_body: Body, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three runs of 30 keep their last 4, 7 snapshots per transaction, while new snapshots
    arrive in the same runs, each with the very states of an old snapshot being deleted."""
    monkeypatch.setattr(postgres_sql, "BATCH", 7)
    old = {
        k(f"o{i:02}", run=f"r{j}"): make_body(100 * j + i, shared=j)
        for j in range(3)
        for i in range(30)
    }
    for key, body in old.items():
        await put(pg_store, key, body)
    await log_deletes(postgres_url)
    new = {
        k(f"n{i}", run=f"r{j}"): make_body(100 * j + i, shared=j)
        for j in range(3)
        for i in range(10)
    }
    collecting = asyncio.ensure_future(pg_store.collect("ns/r?", keep_last=4))
    await first_delete_committed(postgres_url)
    created = await asyncio.gather(*(put(pg_store, key, body) for key, body in new.items()))
    collected = await collecting
    assert all(created)
    assert (collected.runs, collected.snapshots, collected.ranks) == (3, 3 * 26, 3 * 26)
    assert max(await deletes_per_transaction(postgres_url)) <= 7
    for key, body in new.items():
        assert await pg_store.get(key) == body
    for j in range(3):
        names = [s.name for s in (await pg_store.list_snapshots("ns", f"r{j}")).items]
        assert names[:4] == [f"o{i}" for i in range(26, 30)]
        assert sorted(names[4:]) == sorted(f"n{i}" for i in range(10))
    assert await orphans_and_miscounted_runs(postgres_url) == (0, 0)


async def test_collect_by_an_age_of_zero_deletes_nothing(
    pg_store: PostgresStore, make_body: Body
) -> None:
    """``stored_before=0.0`` is a rule (before 1970), not a missing one."""
    for i in range(3):
        await put(pg_store, k(f"s{i}"), make_body(i))
    for dry_run in (True, False):
        none = await pg_store.collect("*", stored_before=0.0, keep_last=0, dry_run=dry_run)
        assert (none.runs, none.snapshots, none.ranks) == (1, 0, 0)
    assert await pg_store.count_snapshots() == 3
