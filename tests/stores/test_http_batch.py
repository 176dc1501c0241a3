"""HttpStore.put_many against real servers: a result per item as put would give it, items
kept in the spool exactly as put keeps them, and single puts for a server without the
batch route."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
import uvicorn
from fastapi import APIRouter

import rngvault
from rngvault import AuthError, ConflictError, DecodeError, StoreError
from rngvault.server.app import create_app
from rngvault.server.routes import batch
from rngvault.server.settings import Settings
from rngvault.server.tokens import TokenFile
from rngvault.stores.http import HttpStore, PutItem
from rngvault.stores.spool import Spool
from tests._live import ServerProcess, free_port

BATCH_ROUTE = "/v1/runs/{namespace}/{run}/batch"


def snapshot(seed: int, step: int | None = None) -> rngvault.Snapshot:
    snap = rngvault.capture(
        {"augment": np.random.default_rng(seed), "python": random.Random(seed)},
        include_globals=False,
        metadata=rngvault.Metadata(step=step if step is not None else seed),
    )
    return dataclasses.replace(snap, created=1e9 + seed)


def item(run: str, name: str, seed: int) -> PutItem:
    snap = snapshot(seed)
    return (run, name, rngvault.encode(snap), snap)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """An open server on loopback (no tokens) with a 20,000-byte body limit."""
    home = tmp_path / "server-home"
    home.mkdir()
    process = ServerProcess(home, home / "server.db", "--max-body", "20000")
    try:
        yield process.start()
    finally:
        process.stop()


def store_for(url: str, tmp_path: Path, token: str | None = None) -> HttpStore:
    return HttpStore(url, token=token, spool=Spool(url, tmp_path / "spool"), cache=tmp_path / "c")


def requests(url: str, method: str, route: str) -> int:
    """How many requests the server answered on ``route`` (its /metrics)."""
    total = 0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'rngvault_requests_total{{method="{method}",route="{route}"'):
            total += int(line.split()[-1])
    return total


def test_put_many_answers_each_item_as_put_would(server: ServerProcess, tmp_path: Path) -> None:
    """New: True; the same again: False; other content: the ConflictError put raises, kept in
    conflicts/; undecodable: put's DecodeError; two runs in one call; one batch request a run."""
    store = store_for(server.url, tmp_path)
    assert store.put(*item("alice/a", "taken", 1)) is True
    junk = ("alice/a", "junk", b"not a snapshot", snapshot(9))
    items = [
        item("alice/a", "new", 2),
        item("alice/a", "taken", 1),
        item("alice/a", "taken", 3),
        junk,
        item("alice/b", "other-run", 4),
        item("alice/a", "new2", 5),
    ]
    results = store.put_many(items)
    assert results[0] is True and results[1] is False and results[4] is True
    assert results[5] is True
    assert isinstance(results[2], ConflictError) and isinstance(results[3], DecodeError)
    # one batch for alice/a; alice/b's single item goes as put sends it
    assert requests(server.url, "POST", BATCH_ROUTE) == 1
    assert requests(server.url, "PUT", "/v1/runs/{namespace}/{run}/snapshots/{name}") == 2
    for run, name, data, _snap in (items[0], items[4], items[5]):
        assert store.get(run, name) == data
    # put's own errors for the same items: the same type and words
    for index in (2, 3):
        with pytest.raises(type(results[index])) as raised:
            store.put(*items[index])
        assert str(raised.value) == str(results[index])
    kept = {(e.name, e.bucket) for e in store.spool.conflicting()}
    assert ("taken", "conflict") in kept and ("junk", "conflict") in kept
    store.close()


def test_a_batch_over_the_servers_limit_is_split_down_to_single_puts(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Two snapshots over the server's body limit make a batch it refuses whole (413): the
    client halves it, and each oversized one gets put's 413, while the others are stored."""
    store = store_for(server.url, tmp_path)
    big = [("alice/big", f"big{i}", b"x" * 30_000, snapshot(i)) for i in range(2)]
    small = [item("alice/big", f"small{i}", 10 + i) for i in range(3)]
    results = store.put_many([small[0], *big, *small[1:]])
    assert results[0] is True and results[3:] == [True, True]
    for oversized in results[1:3]:
        assert isinstance(oversized, StoreError) and "413" in str(oversized)
    for run, name, data, _snap in small:
        assert store.get(run, name) == data
    assert store.spool.count("conflict") == 2
    store.close()


def test_put_many_spools_everything_while_the_server_is_away(tmp_path: Path) -> None:
    """No server: every item is spooled (True, as put returns) and warns once; once the
    server is up, flush sends each, byte-identical."""
    home = tmp_path / "server-home"
    home.mkdir()
    process = ServerProcess(home, home / "server.db")
    store = store_for(process.url, tmp_path)
    items = [item("alice/away", f"s{i}", i) for i in range(20)]
    with pytest.warns(rngvault.SpoolWarning, match="snapshots are kept in"):
        assert store.put_many(items) == [True] * 20
    assert len(store.spool) == 20
    assert store.put_many([item("alice/away", "later", 99)]) == [True]  # away: no new wait
    assert len(store.spool) == 21
    process.start()
    try:
        assert store.flush() == 0
        for run, name, data, _snap in items:
            assert store.get(run, name) == data
    finally:
        store.close()
        process.stop()


def test_a_refused_token_keeps_each_item_in_refused(tmp_path: Path) -> None:
    """A read-only token: each item's result is put's AuthError, each kept in refused/."""
    home = tmp_path / "server-home"
    home.mkdir()
    _record, token = TokenFile(home / "tokens.json").create("read", "*")
    process = ServerProcess(home, home / "server.db", "--tokens", str(home / "tokens.json"))
    process.start()
    try:
        store = store_for(process.url, tmp_path, token=token)
        items = [item("alice/auth", f"s{i}", i) for i in range(4)]
        results = store.put_many(items)
        assert all(isinstance(r, AuthError) and "'write'" in str(r) for r in results)
        assert store.spool.count("refused") == 4
        with pytest.raises(AuthError) as raised:
            store.put(*item("alice/auth", "one", 50))
        assert str(raised.value) == str(results[0])
        store.close()
    finally:
        process.stop()


@pytest.fixture
def old_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A live uvicorn server of this rngvault built without the batch route (its router
    replaced by an empty one): an older server, as far as batches go."""
    monkeypatch.setattr(batch, "router", APIRouter())
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'old.db'}", tokens=tmp_path / "none"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_server_without_the_batch_route_gets_one_put_per_item(
    old_server: str, tmp_path: Path
) -> None:
    store = store_for(old_server, tmp_path)
    items = [item("alice/old", f"s{i}", i) for i in range(5)] + [item("alice/old", "s0", 0)]
    assert store.put_many(items) == [True] * 5 + [False]
    assert store.put_many([item("alice/old", "t", 7), item("alice/old", "u", 8)]) == [True] * 2
    assert requests(old_server, "POST", "unmatched") == 1  # asked once, then remembered
    assert requests(old_server, "PUT", "/v1/runs/{namespace}/{run}/snapshots/{name}") == 8
    for run, name, data, _snap in items[:5]:
        assert store.get(run, name) == data
    store.close()


class BatchStub:
    """A server in memory whose batch route answers as told: ``answer(items)`` gives the
    (status, JSON) of a batch of (name, data) items; single PUTs store and answer 201."""

    def __init__(self, answer: Callable[[list[list[object]]], tuple[int, object]]) -> None:
        self.answer = answer
        self.puts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if request.method == "POST":
            status, body = self.answer(msgpack.unpackb(request.read()))
            return httpx.Response(status, json=body)
        self.puts.append(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(201, json={"created": True})


def stub_store(stub: BatchStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HttpStore:
    """A store of ``stub``; no background retries, so the spool holds what was spooled."""
    monkeypatch.setattr(HttpStore, "_schedule_retry", lambda self: None)
    url = "http://127.0.0.1:9"
    return HttpStore(
        url,
        transport=httpx.MockTransport(stub),
        spool=Spool(url, tmp_path / "spool"),
        cache=tmp_path,
    )


def stored(name: object, status: int = 201) -> dict[str, object]:
    return {"name": name, "status": status, "digest": "0" * 64, "size": 1}


def test_an_item_the_server_fails_on_is_spooled_as_put_spools_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 for one item (its storage failed) spools that item, as put spools a 503; the
    others are stored; the items after it wait in the spool too (the server is away)."""
    failed = {"status": 503, "error": "storage_unavailable", "detail": "db"}

    def answers(items: list[list[object]]) -> tuple[int, object]:
        results = [stored(n) if n != "s1" else {"name": n, **failed} for n, _data in items]
        return 200, {"results": results}

    store = stub_store(BatchStub(answers), tmp_path, monkeypatch)
    first = [item("alice/x", f"s{i}", i) for i in range(3)]
    with pytest.warns(rngvault.SpoolWarning):
        assert store.put_many(first) == [True, True, True]
    assert [e.name for e in store.spool.entries()] == ["s1"]
    assert store.put_many([item("alice/x", f"t{i}", i) for i in range(2)]) == [True, True]
    assert [e.name for e in store.spool.entries()] == ["s1", "t0", "t1"]
    store.close()


def test_a_whole_batch_503_spools_every_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = BatchStub(lambda items: (503, {"error": "storage_unavailable", "detail": "db"}))
    store = stub_store(stub, tmp_path, monkeypatch)
    with pytest.warns(rngvault.SpoolWarning):
        assert store.put_many([item("alice/x", f"s{i}", i) for i in range(4)]) == [True] * 4
    assert len(store.spool) == 4 and stub.puts == []
    store.close()


@pytest.mark.parametrize(
    "answer",
    [
        (200, {"results": []}),
        (200, {"results": [stored("wrong-name")] * 3}),
        (200, ["not", "a", "map"]),
        (400, {"error": "invalid_batch", "detail": "?"}),
    ],
    ids=["too-few", "other-names", "not-a-map", "refused-whole"],
)
def test_an_answer_that_is_not_a_result_per_item_falls_back_to_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: tuple[int, object]
) -> None:
    """Puts are safe to repeat: when the batch answer cannot be read item by item, each
    item is put on its own and gets put's result."""
    stub = BatchStub(lambda items: answer)
    store = stub_store(stub, tmp_path, monkeypatch)
    assert store.put_many([item("alice/x", f"s{i}", i) for i in range(3)]) == [True] * 3
    assert stub.puts == ["s0", "s1", "s2"] and len(store.spool) == 0
    store.close()
