"""Against a real uvicorn server process: round trips, concurrency, backup, kill -9."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import rngvault
from rngvault import cli
from rngvault.server.tokens import TokenFile

MSGPACK = {"Content-Type": "application/msgpack"}
Body = Callable[..., bytes]


def snapshot_url(server, run: str, name: str) -> str:
    return f"{server.url}/v1/runs/live/{run}/snapshots/{name}"


def test_a_real_server_stores_lists_and_returns_exact_bytes(live_server, make_body: Body) -> None:
    with httpx.Client(timeout=10) as client:
        created = client.put(
            snapshot_url(live_server, "r", "e1"), content=make_body(1), headers=MSGPACK
        )
        assert created.status_code == 201
        again = client.put(
            snapshot_url(live_server, "r", "e1"), content=make_body(1), headers=MSGPACK
        )
        assert again.status_code == 200
        assert client.get(snapshot_url(live_server, "r", "e1")).content == make_body(1)
        as_json = client.get(
            snapshot_url(live_server, "r", "e1"), headers={"Accept": "application/json"}
        )
        assert as_json.json()["digest"] == rngvault.decode(make_body(1)).digest
        runs = client.get(f"{live_server.url}/v1/runs").json()["runs"]
        assert [(r["namespace"], r["run"], r["snapshots"]) for r in runs] == [("live", "r", 1)]
        assert client.get(f"{live_server.url}/openapi.json").json()["info"]["title"] == "rngvault"
        assert "rngvault_snapshots 1" in client.get(f"{live_server.url}/metrics").text
    with sqlite3.connect(live_server.db) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_16_threads_of_200_snapshots_are_all_stored_byte_exact(live_server, make_body: Body):
    bodies = {(t, i): make_body(t * 1000 + i, shared=t) for t in range(16) for i in range(200)}
    statuses: list[int] = []

    def writer(thread: int) -> list[int]:
        with httpx.Client(timeout=30) as client:
            return [
                client.put(
                    snapshot_url(live_server, f"t{thread}", f"s{i}"),
                    content=bodies[thread, i],
                    headers=MSGPACK,
                ).status_code
                for i in range(200)
            ]

    with ThreadPoolExecutor(16) as pool:
        for result in pool.map(writer, range(16)):
            statuses += result
    assert statuses == [201] * 3200

    def reader(thread: int) -> int:
        with httpx.Client(timeout=30) as client:
            return sum(
                client.get(snapshot_url(live_server, f"t{thread}", f"s{i}")).content
                == bodies[thread, i]
                for i in range(200)
            )

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(reader, range(16))) == 3200


def _write_until(server, stop: threading.Event, acked: dict, make_body: Body, worker: int) -> None:
    """PUT snapshots until stopped; record those the server acknowledged (201 or 200)."""
    with httpx.Client(timeout=5) as client:
        for i in range(100_000):
            if stop.is_set():
                return
            body = make_body(worker * 100_000 + i, shared=worker)
            try:
                answer = client.put(
                    snapshot_url(server, f"w{worker}", f"s{i}"), content=body, headers=MSGPACK
                )
            except httpx.TransportError:
                return
            if answer.status_code in (200, 201):
                acked[worker, i] = body


def test_kill_9_loses_no_acknowledged_snapshot(server_factory, make_body: Body) -> None:
    server = server_factory()
    stop, acked = threading.Event(), {}
    threads = [
        threading.Thread(target=_write_until, args=(server, stop, acked, make_body, w))
        for w in range(8)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill9()  # mid-write: clients are still sending
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acked) >= 300
    restarted = server_factory(db=server.db)
    with httpx.Client(timeout=10) as client:
        for (worker, i), body in acked.items():
            got = client.get(snapshot_url(restarted, f"w{worker}", f"s{i}"))
            assert got.status_code == 200 and got.content == body, (worker, i)
    with sqlite3.connect(server.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_backup_of_a_live_store_is_consistent_and_complete(
    server_factory, make_body: Body, tmp_path: Path
) -> None:
    live_server = server_factory()
    stop, acked = threading.Event(), {}
    writer = threading.Thread(target=_write_until, args=(live_server, stop, acked, make_body, 0))
    writer.start()
    try:
        deadline = time.monotonic() + 20
        while len(acked) < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        before = dict(acked)
        copy = tmp_path / "backup.db"
        assert cli.main(["backup", "--db", f"sqlite:///{live_server.db}", str(copy)]) == 0
    finally:
        stop.set()
        writer.join(timeout=30)
    assert len(before) >= 50
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    from_copy = server_factory(db=copy)
    with httpx.Client(timeout=10) as client:
        for (worker, i), body in before.items():
            assert client.get(snapshot_url(from_copy, f"w{worker}", f"s{i}")).content == body


def test_a_server_with_tokens_wants_them(server_factory, tmp_path: Path, make_body: Body) -> None:
    tokens = tmp_path / "tokens.json"
    _record, token = TokenFile(tokens).create("write", "live")
    server = server_factory("--tokens", str(tokens))
    url = snapshot_url(server, "r", "s")
    with httpx.Client(timeout=10) as client:
        assert client.put(url, content=make_body(1), headers=MSGPACK).status_code == 401
        auth = {**MSGPACK, "Authorization": f"Bearer {token}"}
        assert client.put(url, content=make_body(1), headers=auth).status_code == 201
        assert client.get(f"{server.url}/healthz").status_code == 200
