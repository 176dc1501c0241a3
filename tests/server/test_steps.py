"""GET /v1/runs/{namespace}/{run}/steps on a real server, and ``HttpStore.steps`` over it: the
same listing as the local store's for the same snapshots, read scope and namespaces enforced,
bad input refused with a clear answer, a hostile answer refused by the client."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import rngvault
from rngvault import InvalidNameError, Metadata, NotFoundError, StoreError
from rngvault.server.storage.base import SnapshotKey
from rngvault.server.storage.sqlite import SQLiteStore
from rngvault.server.tokens import TokenFile
from rngvault.stores import LocalStore, StepEntry
from rngvault.stores.http import HttpStore
from tests._live import ServerProcess

Body = Callable[..., bytes]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's spool and cache inside the test's directory."""
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "client-home"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """A server with tokens: write and read over alice, read over bob."""
    home = tmp_path_factory.mktemp("steps-server")
    file = TokenFile(home / "tokens.json")
    tokens = {
        "write": file.create("write", "alice")[1],
        "read": file.create("read", "alice")[1],
        "bob": file.create("read", "bob")[1],
    }
    server = ServerProcess(home, home / "server.db", "--tokens", str(home / "tokens.json"))
    try:
        yield server.start(), tokens
    finally:
        server.stop()


def snapshot(seed: int, step: int | None, generators: tuple[str, ...] = ("moving", "fixed")):
    """A snapshot whose ``moving`` state depends on ``seed`` and ``fixed`` never changes."""
    made = {"moving": np.random.default_rng(seed), "fixed": random.Random(0)}
    snap = rngvault.capture(
        {name: made[name] for name in generators},
        include_globals=False,
        metadata=Metadata(step=step, metrics={"loss": 1.0 / (seed + 1)}),
    )
    return dataclasses.replace(snap, created=1_700_000_000.0 + seed)


def put_both(stores: list, run: str, snapshots: dict[str, rngvault.Snapshot]) -> None:
    for name, snap in snapshots.items():
        body = rngvault.encode(snap)
        for store in stores:
            store.put(run, name, body, snap)


def test_http_steps_list_what_the_local_store_lists(served, tmp_path: Path) -> None:
    """The same encoded snapshots in a directory and on the server: the same entries, in the
    same order (equal steps as stored), for every generator, start and rank."""
    server, tokens = served
    http = HttpStore(server.url, token=tokens["write"])
    local = LocalStore(tmp_path / "local")
    steps = [4, 1, 4, None, 2, 1, 0, 4, 9]
    snapshots = {f"s{i}": snapshot(i, step) for i, step in enumerate(steps)}
    snapshots["lone"] = snapshot(20, 3, generators=("fixed",))
    put_both([http, local], "alice/same", snapshots)
    for generator in (None, "moving", "fixed", "absent"):
        for start in (None, 2, 5, 10):
            mine = list(local.steps("alice/same", start=start, generator=generator))
            theirs = list(http.steps("alice/same", start=start, generator=generator))
            assert theirs == mine, (generator, start)
    listed = list(http.steps("alice/same", generator="moving"))
    assert [e.name for e in listed] == ["s6", "s1", "s5", "s4", "lone", "s0", "s2", "s7", "s8"]
    assert all(isinstance(e, StepEntry) for e in listed)
    assert listed[4].state is None and all(e.state for e in listed if e.name != "lone")
    assert list(http.steps("alice/same", rank=1)) == []
    http.close()


def test_the_route_pages_by_cursor_with_its_json_shape(served) -> None:
    server, tokens = served
    http = HttpStore(server.url, token=tokens["write"])
    put_both([http], "alice/paged", {f"s{i:02}": snapshot(i, 100 - i) for i in range(25)})
    headers = {"Authorization": f"Bearer {tokens['read']}"}
    url = f"{server.url}/v1/runs/alice/paged/steps"
    seen, cursor = [], None
    while True:
        params = {"limit": 7, "generator": "fixed", **({"cursor": cursor} if cursor else {})}
        answer = httpx.get(url, params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"steps", "next_cursor"} and len(body["steps"]) <= 7
        seen += body["steps"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [s["step"] for s in seen] == list(range(76, 101))
    assert [s["name"] for s in seen] == [f"s{i:02}" for i in reversed(range(25))]
    assert {s["state"] for s in seen} == {seen[0]["state"]}  # ``fixed`` never moves
    assert len({s["digest"] for s in seen}) == 25
    assert all(set(s) == {"step", "name", "digest", "state"} for s in seen)
    plain = httpx.get(url, params={"start": 99}, headers=headers).json()
    assert [(s["step"], s["state"]) for s in plain["steps"]] == [(99, None), (100, None)]
    assert plain["next_cursor"] is None
    http.close()


def test_reading_steps_needs_read_scope_over_the_namespace(served) -> None:
    server, tokens = served
    HttpStore(server.url, token=tokens["write"]).put(
        "alice/auth", "s0", rngvault.encode(snapshot(0, 1)), snapshot(0, 1)
    )
    url = f"{server.url}/v1/runs/alice/auth/steps"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer nonsense"}).status_code == 401
    other = httpx.get(url, headers={"Authorization": f"Bearer {tokens['bob']}"})
    assert other.status_code == 403, other.text
    with pytest.raises(rngvault.AuthError):
        list(HttpStore(server.url, token=tokens["bob"]).steps("alice/auth"))
    for token in ("read", "write"):
        listed = list(HttpStore(server.url, token=tokens[token]).steps("alice/auth"))
        assert [(e.step, e.name) for e in listed] == [(1, "s0")]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("generator=no%20spaces", 400, "invalid generator name 'no spaces'"),
        ("generator=" + "g" * 129, 400, "invalid generator name"),
        ("rank=-1", 422, "rank"),
        ("rank=x", 422, "rank"),
        ("limit=0", 422, "limit"),
        ("limit=10001", 422, "limit"),
        ("start=first", 422, "start"),
        (f"start={2**64}", 422, "start"),
        ("cursor=nonsense", 400, "invalid cursor"),
    ],
)
def test_bad_queries_are_refused_saying_what_is_wrong(served, query, status, words) -> None:
    server, tokens = served
    HttpStore(server.url, token=tokens["write"]).put(
        "alice/bad", "s0", rngvault.encode(snapshot(0, 1)), snapshot(0, 1)
    )
    answer = httpx.get(
        f"{server.url}/v1/runs/alice/bad/steps?{query}",
        headers={"Authorization": f"Bearer {tokens['read']}"},
    )
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]


def test_an_unknown_run_or_bad_name_is_a_clear_error(served) -> None:
    server, tokens = served
    http = HttpStore(server.url, token=tokens["read"])
    answer = httpx.get(
        f"{server.url}/v1/runs/alice/nowhere/steps",
        headers={"Authorization": f"Bearer {tokens['read']}"},
    )
    assert answer.status_code == 404 and "no run alice/nowhere" in answer.json()["detail"]
    with pytest.raises(NotFoundError, match="nowhere"):
        list(http.steps("alice/nowhere"))
    with pytest.raises(InvalidNameError, match="invalid generator name"):
        next(http.steps("alice/nowhere", generator="a b"))
    with pytest.raises(InvalidNameError):
        next(http.steps("alice/../x"))


def _answer(*pages: dict) -> httpx.MockTransport:
    """A server answering ``pages`` in turn."""
    left = list(pages)
    return httpx.MockTransport(lambda request: httpx.Response(200, json=left.pop(0)))


GOOD = {"step": 1, "name": "s1", "digest": "a" * 64, "state": None}


@pytest.mark.parametrize(
    ("pages", "generator", "words"),
    [
        ([{"steps": [dict(GOOD, step="one")]}], None, "step 'one' is not an integer"),
        ([{"steps": [dict(GOOD, step=1.5)]}], None, "is not an integer"),
        ([{"steps": [dict(GOOD, name="../x")]}], None, "name '../x' is not a snapshot name"),
        ([{"steps": [dict(GOOD, digest="zz")]}], None, "digest 'zz' is not a SHA-256"),
        ([{"steps": [dict(GOOD, state=7)]}], "g", "state 7 is not a SHA-256"),
        ([{"steps": [dict(GOOD, state="b" * 64)]}], None, "no generator was asked for"),
        ([{"steps": ["x"]}], None, "a listed step must be a map"),
        ([{"items": []}], None, "no list 'steps'"),
        ([{"steps": [dict(GOOD, step=5), GOOD]}], None, "not in step order"),
        ([{"steps": [GOOD]}], None, "step 1 ('s1') is listed after step 3"),
        (
            [{"steps": [GOOD], "next_cursor": "c"}, {"steps": [GOOD], "next_cursor": "c"}],
            None,
            "next_cursor does not move on",
        ),
    ],
)
def test_a_hostile_steps_answer_is_a_store_error(pages, generator, words) -> None:
    store = HttpStore("http://vault.test", transport=_answer(*pages))
    start = 3 if "after step 3" in words else None
    with pytest.raises(StoreError, match=words.replace("(", r"\(").replace(")", r"\)")):
        list(store.steps("alice/run", generator=generator, start=start))


def test_big_steps_travel_as_strings_and_come_back_as_integers(served) -> None:
    server, tokens = served
    http = HttpStore(server.url, token=tokens["write"])
    put_both([http], "alice/big", {"b": snapshot(1, 2**64 - 1), "s": snapshot(2, 2**53 + 1)})
    listed = httpx.get(
        f"{server.url}/v1/runs/alice/big/steps",
        headers={"Authorization": f"Bearer {tokens['read']}"},
    ).json()["steps"]
    assert [s["step"] for s in listed] == [str(2**53 + 1), str(2**64 - 1)]
    assert [e.step for e in http.steps("alice/big")] == [2**53 + 1, 2**64 - 1]


STEPS = 100_000


def _fill(db: Path, steps: int) -> None:
    """A run ``alice/long`` of ``steps`` snapshots, one per step: one put through the
    backend, then copies of its rows by SQL (with their own names and steps)."""

    async def first() -> None:
        store = await SQLiteStore.open(f"sqlite:///{db}")
        snap = snapshot(0, 0)
        await store.put(SnapshotKey("alice", "long", "s0"), rngvault.encode(snap), snap)
        await store.close()

    asyncio.run(first())
    conn = sqlite3.connect(db)
    with conn:
        entry, snapshot_id, run_id = conn.execute(
            "SELECT id, snapshot_id, run_id FROM entries"
        ).fetchone()
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO snapshots (run_id, name, stored)"
            " SELECT run_id, 's' || i, stored + i FROM n, snapshots WHERE id = ?",
            (steps - 1, snapshot_id),
        )
        conn.execute(
            "INSERT INTO entries (snapshot_id, rank, body_sha256, digest, size, envelope, info,"
            " run_id, step) SELECT s.id, 0, e.body_sha256, e.digest, e.size, e.envelope,"
            " e.info, e.run_id, CAST(substr(s.name, 2) AS INTEGER)"
            " FROM snapshots s, entries e WHERE e.id = ? AND s.id != ?",
            (entry, snapshot_id),
        )
        conn.execute(
            "INSERT INTO entry_states (entry_id, position, at, state_id)"
            " SELECT n.id, es.position, es.at, es.state_id FROM entries n, entry_states es"
            " WHERE es.entry_id = ? AND n.id != ?",
            (entry, entry),
        )
        conn.execute("UPDATE runs SET snapshots = ? WHERE id = ?", (steps, run_id))
    conn.close()


def test_listing_a_long_run_over_loopback(tmp_path: Path) -> None:
    """100,000 steps of one run through ``HttpStore.steps`` (pages of 10,000): complete and
    in order; the time is printed (a measurement, not a pass mark)."""
    db = tmp_path / "long.db"
    _fill(db, STEPS)
    server = ServerProcess(tmp_path, db).start()
    try:
        http = HttpStore(server.url)
        for generator in (None, "moving"):
            began = time.perf_counter()
            listed = list(http.steps("alice/long", generator=generator))
            took = time.perf_counter() - began
            print(f"\nsteps listing, {STEPS:,} steps, generator={generator}: {took:.3f} s")
            assert [e.step for e in listed] == list(range(STEPS))
            assert len({(e.digest, e.state) for e in listed}) == 1
            assert (listed[0].state is None) == (generator is None)
        later = list(http.steps("alice/long", start=STEPS - 3))
        assert [e.name for e in later] == [f"s{STEPS - 3}", f"s{STEPS - 2}", f"s{STEPS - 1}"]
        http.close()
    finally:
        server.stop()
