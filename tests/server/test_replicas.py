"""Two real server processes on one PostgreSQL database, as behind a load balancer: writers
spread across both lose nothing, reads are exact from either, retries are idempotent across
replicas, a name raced on both replicas at once has exactly one winner, and a database
outage is a 503 that both replicas recover from."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests._live import ServerProcess
from tests._postgres import PostgresServer

MSGPACK = {"Content-Type": "application/msgpack"}
Body = Callable[..., bytes]
WRITERS = 16
PER_WRITER = 25


def snapshot_url(server: ServerProcess, run: str, name: str) -> str:
    return f"{server.url}/v1/runs/team/{run}/snapshots/{name}"


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Replicas A and B: ``rngvault serve --db postgresql://...`` on one new database."""
    home = tmp_path / "home"
    home.mkdir()
    servers = [ServerProcess(home, tmp_path / "unused.db", "--db", postgres_url) for _ in "AB"]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def test_16_writers_across_two_replicas_lose_nothing_and_read_back_exact_from_either(
    replicas: tuple[ServerProcess, ServerProcess], make_body: Body
) -> None:
    bodies = {
        (w, i): make_body(w * 1000 + i, shared=w % 3)
        for w in range(WRITERS)
        for i in range(PER_WRITER)
    }

    def run_of(writer: int) -> str:
        return f"r{writer % 4}"  # each run gets writers on both replicas

    def write(writer: int) -> list[int]:
        server = replicas[writer % 2]
        with httpx.Client(timeout=30) as client:
            return [
                client.put(
                    snapshot_url(server, run_of(writer), f"w{writer}-{i}"),
                    content=bodies[writer, i],
                    headers=MSGPACK,
                ).status_code
                for i in range(PER_WRITER)
            ]

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = [s for result in pool.map(write, range(WRITERS)) for s in result]
    assert statuses == [201] * (WRITERS * PER_WRITER)

    def read(writer: int) -> int:
        exact = 0
        with httpx.Client(timeout=30) as client:
            for i in range(PER_WRITER):
                for server in replicas:
                    got = client.get(snapshot_url(server, run_of(writer), f"w{writer}-{i}"))
                    exact += got.status_code == 200 and got.content == bodies[writer, i]
        return exact

    with ThreadPoolExecutor(WRITERS) as pool:
        assert sum(pool.map(read, range(WRITERS))) == 2 * WRITERS * PER_WRITER

    with httpx.Client(timeout=30) as client:
        for server in replicas:
            runs = client.get(f"{server.url}/v1/runs").json()["runs"]
            assert [(r["run"], r["snapshots"]) for r in runs] == [
                (f"r{n}", WRITERS // 4 * PER_WRITER) for n in range(4)
            ]
        listed: list[str] = []
        cursor = None
        for page_number in range(20):  # 100 snapshots at 10 a page, alternating replicas
            params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
            page = client.get(
                f"{replicas[page_number % 2].url}/v1/runs/team/r0/snapshots", params=params
            ).json()
            listed += [s["name"] for s in page["snapshots"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        expected = {f"w{w}-{i}" for w in range(0, WRITERS, 4) for i in range(PER_WRITER)}
        assert sorted(listed) == sorted(expected)


def test_a_retry_on_the_other_replica_is_idempotent_and_other_content_conflicts(
    replicas: tuple[ServerProcess, ServerProcess], make_body: Body
) -> None:
    a, b = replicas
    with httpx.Client(timeout=30) as client:
        first = client.put(snapshot_url(a, "retry", "s1"), content=make_body(1), headers=MSGPACK)
        again = client.put(snapshot_url(b, "retry", "s1"), content=make_body(1), headers=MSGPACK)
        other = client.put(snapshot_url(b, "retry", "s1"), content=make_body(2), headers=MSGPACK)
        assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
        assert again.json()["digest"] == first.json()["digest"]
        assert client.get(snapshot_url(b, "retry", "s1")).content == make_body(1)


def test_one_name_with_different_content_on_both_replicas_at_once_has_one_winner(
    replicas: tuple[ServerProcess, ServerProcess], make_body: Body
) -> None:
    rounds = 8
    barrier = threading.Barrier(2, timeout=30)

    def race(side: int) -> list[int]:
        with httpx.Client(timeout=30) as client:
            client.get(f"{replicas[side].url}/healthz")  # connect before the race
            statuses = []
            for n in range(rounds):
                body = make_body(100 * n + side)
                barrier.wait()
                url = snapshot_url(replicas[side], "race", f"s{n}")
                statuses.append(client.put(url, content=body, headers=MSGPACK).status_code)
            return statuses

    with ThreadPoolExecutor(2) as pool:
        on_a, on_b = pool.map(race, range(2))
    with httpx.Client(timeout=30) as client:
        for n in range(rounds):
            assert sorted((on_a[n], on_b[n])) == [201, 409]
            winner = make_body(100 * n + (0 if on_a[n] == 201 else 1))
            for server in replicas:
                assert client.get(snapshot_url(server, "race", f"s{n}")).content == winner


def test_replicas_answer_503_while_the_database_is_unreachable_and_recover_after(
    replicas: tuple[ServerProcess, ServerProcess],
    postgres: PostgresServer,
    postgres_url: str,
    make_body: Body,
) -> None:
    import psycopg

    a, b = replicas
    database = postgres_url.rsplit("/", 1)[1]
    with httpx.Client(timeout=30) as client:
        url = snapshot_url(a, "outage", "s1")
        assert client.put(url, content=make_body(1), headers=MSGPACK).status_code == 201
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            try:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )
                down = client.get(snapshot_url(b, "outage", "s1"))
                assert down.status_code == 503 and down.json()["error"] == "storage_unavailable"
                assert client.get(f"{a.url}/healthz").status_code == 503
            finally:
                admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        for server in replicas:
            for _ in range(20):  # the pool reconnects with a backoff of a few seconds
                if client.get(f"{server.url}/healthz").status_code == 200:
                    break
            assert client.get(snapshot_url(server, "outage", "s1")).content == make_body(1)
