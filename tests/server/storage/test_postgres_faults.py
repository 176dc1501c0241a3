"""PostgreSQL faults a replica must ride out: a long outage (recovered within seconds of the
database's return), a row lock held elsewhere (503 after the lock timeout, the rest of the
server unaffected), a frozen server (SIGSTOP: bounded 503s, not hangs), and a /healthz that
answers within about a second when the database is down.

Each test that stops or freezes PostgreSQL does it to a server of this module's own, so the
session's shared server is never disturbed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests._live import ServerProcess
from tests._postgres import HOW_TO, PostgresServer, unavailable

psycopg = pytest.importorskip("psycopg", reason=f"psycopg is not installed: {HOW_TO}")

from rngvault._errors import StoreError  # noqa: E402
from rngvault.server.storage.postgres import PostgresStore  # noqa: E402

MSGPACK = {"Content-Type": "application/msgpack"}
Body = Callable[..., bytes]
OUTAGE = 40.0  # seconds PostgreSQL stays down in the outage test
RECOVERED_WITHIN = 5.0  # seconds after PostgreSQL accepts connections again
HEALTH_WITHIN = 2.0  # /healthz answers within this when the database is down or frozen
LOCKED_PUT_WITHIN = 10.0  # a PUT blocked by a row lock answers 503 within this (~6 s here)
FROZEN_PUT_WITHIN = 15.0  # a PUT to a frozen database answers 503 within this (~8 s here)


@pytest.fixture(scope="module")
def own_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """A PostgreSQL server for this module alone (stopped and frozen by its tests)."""
    assert unavailable() is None  # the session fixture has skipped or failed otherwise
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_url(own_postgres: PostgresServer) -> Iterator[str]:
    url = own_postgres.create_database()
    yield url
    own_postgres.drop_database(url)


@pytest.fixture
def replica(own_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """``rngvault serve --db postgresql://...`` on a new database of the module's server."""
    home = tmp_path / "home"
    home.mkdir()
    server = ServerProcess(home, tmp_path / "unused.db", "--db", own_url)
    try:
        yield server.start()
    finally:
        server.stop()


def snapshot_url(server: ServerProcess, run: str, name: str) -> str:
    return f"{server.url}/v1/runs/team/{run}/snapshots/{name}"


def timed(call: Callable[[], httpx.Response]) -> tuple[int | None, float]:
    """(status, seconds); status None when the client gave up waiting."""
    started = time.monotonic()
    try:
        status: int | None = call().status_code
    except httpx.TimeoutException:
        status = None
    return status, time.monotonic() - started


def test_a_replica_takes_puts_within_seconds_of_postgresql_returning_after_a_40_s_outage(
    replica: ServerProcess, own_postgres: PostgresServer, make_body: Body
) -> None:
    """Under a request every half second, PostgreSQL is stopped for 40 s: PUTs answer 503
    and /healthz 503 within about a second meanwhile; once PostgreSQL is back, a PUT
    succeeds within a few seconds (not after the pool's backoff has grown to tens)."""
    seed = iter(range(1, 10_000))
    with httpx.Client(timeout=30) as client:

        def put() -> httpx.Response:
            n = next(seed)
            return client.put(
                snapshot_url(replica, "outage", f"s{n}"), content=make_body(n), headers=MSGPACK
            )

        assert put().status_code == 201
        own_postgres.down()
        during: list[tuple[str, int | None, float]] = []
        try:
            ends = time.monotonic() + OUTAGE
            while time.monotonic() < ends:
                during.append(("PUT", *timed(put)))
                during.append(("healthz", *timed(lambda: client.get(f"{replica.url}/healthz"))))
                time.sleep(0.5)
        finally:
            own_postgres.up()
        back = time.monotonic()
        while True:
            status, _took = timed(put)
            if status == 201 or time.monotonic() - back > 30:
                break
            time.sleep(0.2)
        recovered = time.monotonic() - back
    assert status == 201 and recovered <= RECOVERED_WITHIN, f"first 201 after {recovered:.1f}s"
    assert {status for _what, status, _took in during} == {503}, during
    slowest_health = max(took for what, _status, took in during if what == "healthz")
    assert slowest_health <= HEALTH_WITHIN, during


def test_a_row_lock_held_elsewhere_turns_blocked_puts_into_503s_and_spares_the_rest(
    replica: ServerProcess, own_url: str, make_body: Body
) -> None:
    """Another session holds the run's row lock while 16 PUTs to that run arrive: each
    answers 503 after the lock timeout, while /healthz and a read of another run stay 200;
    once the lock is released, a retry of the same bytes is stored."""
    with httpx.Client(timeout=30) as client:
        for run in ("locked", "other"):
            url = snapshot_url(replica, run, "s0")
            assert client.put(url, content=make_body(0), headers=MSGPACK).status_code == 201
    blocked = {n: make_body(n) for n in range(1, 17)}

    def put(n: int) -> tuple[int | None, float]:
        with httpx.Client(timeout=30) as client:
            url = snapshot_url(replica, "locked", f"s{n}")
            return timed(lambda: client.put(url, content=blocked[n], headers=MSGPACK))

    others: list[tuple[str, int | None, float]] = []
    with (
        psycopg.connect(own_url) as holder,
        ThreadPoolExecutor(len(blocked)) as pool,
        httpx.Client(timeout=30) as client,
    ):
        holder.execute("SELECT id FROM runs WHERE name = 'locked' FOR UPDATE")
        try:
            futures = [pool.submit(put, n) for n in blocked]
            deadline = time.monotonic() + 2 * LOCKED_PUT_WITHIN
            while not all(f.done() for f in futures) and time.monotonic() < deadline:
                others.append(("healthz", *timed(lambda: client.get(f"{replica.url}/healthz"))))
                get = lambda: client.get(snapshot_url(replica, "other", "s0"))  # noqa: E731
                others.append(("GET", *timed(get)))
                time.sleep(0.1)
        finally:
            holder.rollback()  # releases the lock; PUTs still waiting then go through
        results = [f.result() for f in futures]
        retried = client.put(
            snapshot_url(replica, "locked", "s1"), content=blocked[1], headers=MSGPACK
        )
    assert [status for status, _took in results] == [503] * len(blocked), results
    assert max(took for _status, took in results) <= LOCKED_PUT_WITHIN, results
    assert len(others) >= 4 and {status for _what, status, _took in others} == {200}, others
    assert retried.status_code == 201


def test_a_frozen_database_gives_bounded_503s_and_the_replica_recovers_when_it_resumes(
    replica: ServerProcess, own_postgres: PostgresServer, make_body: Body
) -> None:
    """PostgreSQL stopped with SIGSTOP (connections open, nothing answers): /healthz answers
    503 within about a second and a PUT 503 within the call bound, instead of hanging until
    PostgreSQL resumes; after SIGCONT the replica stores snapshots again."""
    with httpx.Client(timeout=30) as client:
        url = snapshot_url(replica, "frozen", "s0")
        assert client.put(url, content=make_body(0), headers=MSGPACK).status_code == 201
        own_postgres.freeze()
        try:
            health = timed(lambda: client.get(f"{replica.url}/healthz"))
            url = snapshot_url(replica, "frozen", "s1")
            put = timed(lambda: client.put(url, content=make_body(1), headers=MSGPACK))
        finally:
            own_postgres.thaw()
        resumed = time.monotonic()
        while True:
            status, _took = timed(lambda: client.put(url, content=make_body(1), headers=MSGPACK))
            if status in (200, 201) or time.monotonic() - resumed > 30:
                break
            time.sleep(0.2)
        stored = client.get(url).content
    assert health[0] == 503 and health[1] <= HEALTH_WITHIN, health
    assert put[0] == 503 and put[1] <= FROZEN_PUT_WITHIN, put
    assert status in (200, 201) and stored == make_body(1)


@pytest.mark.anyio
async def test_check_fails_within_about_a_second_when_the_database_refuses_connections(
    postgres: PostgresServer, postgres_url: str
) -> None:
    store = await PostgresStore.open(postgres_url)
    database = postgres_url.rsplit("/", 1)[1]
    try:
        async with await psycopg.AsyncConnection.connect(postgres.url(), autocommit=True) as admin:
            await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )
                for _ in range(2):  # with broken connections in the pool, then with none
                    started = time.monotonic()
                    with pytest.raises(StoreError, match="PostgreSQL"):
                        await store.check()
                    assert time.monotonic() - started <= HEALTH_WITHIN
            finally:
                await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    finally:
        await store.close()
