"""Run records in the client stores, a directory and a real server, with the same answers:
written once (the first kept), ``{}`` for a run without, NotFoundError for no such run, a
record creates its run; bad records never stored; damaged or hostile ones refused."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import rngvault
from rngvault import NotFoundError, RecordError, StoreError
from rngvault.stores import LocalStore, Store
from rngvault.stores.http import HttpStore
from rngvault.stores.local import RECORD_FILE
from tests._live import ServerProcess

RECORD = {
    "seed": 3407,
    "config": {"lr": 0.1, "name": "résumé", "layers": [64, 64]},
    "command": ["train.py", "--lr", "0.1"],
    "host": "node-1",
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True},
}
_RUNS = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One open server on loopback for the module (each test uses runs of its own)."""
    home = tmp_path_factory.mktemp("records-client")
    started = ServerProcess(home, home / "live.db").start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=["local", "http"])
def store(request: pytest.FixtureRequest, tmp_path: Path, server: ServerProcess) -> Iterator[Store]:
    made: Store = (
        LocalStore(tmp_path / "store") if request.param == "local" else HttpStore(server.url)
    )
    yield made
    made.close()


@pytest.fixture
def run() -> str:
    """A run name no other test of the module uses."""
    return f"alice/records-{next(_RUNS)}"


def put_snapshot(store: Store, run: str, name: str, seed: int, step: int | None = None) -> None:
    snapshot = rngvault.capture(
        {"a": np.random.default_rng(seed), "py": random.Random(seed)},
        include_globals=False,
        metadata=rngvault.Metadata(step=step),
    )
    assert store.put(run, name, rngvault.encode(snapshot), snapshot)


def test_a_record_is_kept_once_and_a_later_put_returns_the_first(store: Store, run: str) -> None:
    assert isinstance(store, Store)
    assert store.put_record(run, RECORD) == RECORD
    assert store.put_record(run, {**RECORD, "seed": 17}) == RECORD
    assert store.record(run) == RECORD
    assert store.record(run)["config"]["name"] == "résumé"


def test_a_run_without_a_record_reads_empty_and_an_unknown_run_is_not_found(
    store: Store, run: str
) -> None:
    put_snapshot(store, run, "epoch1", 1)
    assert store.record(run) == {}
    assert store.put_record(run, RECORD) == RECORD
    assert [s.name for s in store.snapshots(run)] == ["epoch1"]
    with pytest.raises(NotFoundError):
        store.record("alice/no-such-run")
    with pytest.raises(NotFoundError):
        store.record("nobody/" + run.split("/")[1])


def test_a_record_creates_its_run_and_listings_show_only_snapshots(store: Store, run: str) -> None:
    store.put_record(run, {"seed": 1})
    assert run in store.runs()
    assert store.snapshots(run) == []
    put_snapshot(store, run, "epoch1", 1)
    put_snapshot(store, run, "step5", 2, step=5)
    assert sorted(s.name for s in store.snapshots(run)) == ["epoch1", "step5"]
    assert [e.name for e in store.steps(run)] == ["step5"]
    assert store.record(run) == {"seed": 1}


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"seed": -1}, "'seed'"),
        ({"seed": "3407"}, "'seed'"),
        ({"colour": "red"}, "no field 'colour'"),
        ({"config": {"lr": float("nan")}}, "finite"),
        ({"config": {"blob": "x" * 70_000}}, "bytes"),
        (["not", "a", "map"], "JSON object"),
    ],
)
def test_a_bad_record_is_a_record_error_and_nothing_is_stored(
    store: Store, run: str, record: object, says: str
) -> None:
    with pytest.raises(RecordError, match=says):
        store.put_record(run, record)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        store.record(run)


def test_both_stores_keep_the_same_record(tmp_path: Path, server: ServerProcess, run: str) -> None:
    local, remote = LocalStore(tmp_path / "store"), HttpStore(server.url)
    try:
        given = {**RECORD, "created": 1_700_000_000.25, "environment": {"python": "3.11"}}
        assert local.put_record(run, given) == remote.put_record(run, given)
        assert local.record(run) == remote.record(run) == given
    finally:
        local.close()
        remote.close()


def test_local_records_written_at_once_keep_exactly_one(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    answers: list[dict] = []
    barrier = threading.Barrier(8)

    def write(seed: int) -> None:
        barrier.wait()
        answers.append(store.put_record("alice/race", {"seed": seed}))

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    kept = store.record("alice/race")
    assert len(answers) == 8 and all(answer == kept for answer in answers)
    run_dir = tmp_path / "store" / "runs" / "alice" / "race"
    assert sorted(p.name for p in run_dir.iterdir()) == [RECORD_FILE]  # no temporary left


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b'{"seed": -5}', b"[1]", b'{"seed": 1, "git": 2}'],
)
def test_a_damaged_local_record_is_a_store_error_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_record("alice/r", {"seed": 1})
    path = tmp_path / "store" / "runs" / "alice" / "r" / RECORD_FILE
    path.write_bytes(content)
    with pytest.raises(StoreError, match="damaged run record .*" + RECORD_FILE):
        store.record("alice/r")
    with pytest.raises(StoreError, match="damaged run record"):  # never written over
        store.put_record("alice/r", {"seed": 2})
    assert path.read_bytes() == content


def test_a_record_a_newer_version_wrote_reads_with_its_new_fields(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_record("alice/r", {"seed": 1})
    path = tmp_path / "store" / "runs" / "alice" / "r" / RECORD_FILE
    path.write_text('{"seed": 1, "cluster": {"name": "a"}}')
    assert store.record("alice/r") == {"seed": 1, "cluster": {"name": "a"}}


def hostile(answer: object, status: int = 200) -> HttpStore:
    """An HttpStore whose server answers every request with ``answer``."""
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, content=json.dumps(answer).encode())
    )
    return HttpStore("http://vault.test", transport=transport)


def test_a_record_answered_by_the_server_is_checked() -> None:
    bad = {"created": True, "record": {"seed": -1}}
    with pytest.raises(StoreError, match="answered a record that is not valid"):
        hostile(bad).put_record("alice/r", {"seed": 1})
    with pytest.raises(StoreError, match="answered a record that is not valid"):
        hostile({"namespace": "alice", "run": "r", "record": {"seed": -1}}).record("alice/r")
    with pytest.raises(StoreError, match="without a record"):
        hostile({"namespace": "alice", "run": "r"}).record("alice/r")
    with pytest.raises(StoreError, match="not a record"):
        hostile([1, 2]).put_record("alice/r", {"seed": 1})
    refused = {"error": "invalid_record", "detail": "record field 'seed' must be an int >= 0"}
    with pytest.raises(RecordError, match="invalid_record"):
        hostile(refused, status=422).put_record("alice/r", {"seed": 1})
    with pytest.raises(NotFoundError):
        hostile({"error": "not_found", "detail": "no run alice/r"}, status=404).record("alice/r")


def test_a_record_waits_in_the_spool_while_the_server_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store waits out a server that stopped answering, a record is kept in the
    spool at once, without a request (the first one of a run: later ones add nothing), and
    sent, before the snapshots, once the server answers."""
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "home"))
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = json.loads(request.content)
        return httpx.Response(201, json={"created": True, "record": body})

    store = HttpStore("http://vault.test", transport=httpx.MockTransport(answer))
    store._away, store._retry_at = True, time.monotonic() + 3600
    assert store.put_record("alice/r", {"seed": 1}) == {"seed": 1}
    assert store.put_record("alice/r", {"seed": 2}) == {"seed": 2}
    assert requests == [] and len(store.spool.waiting_records()) == 1
    store._retry_at = 0.0  # the retry is due
    assert store.flush() == 0
    assert [json.loads(r.content) for r in requests] == [{"seed": 1}]  # the first one kept
    assert store.spool.waiting_records() == []


def test_a_spooled_record_the_server_refuses_is_dropped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "home"))
    store = hostile({"error": "invalid_record", "detail": "no"}, status=422)
    store.spool.add_record("alice/r", '{"seed":1}')
    (store.spool.records / "garbage.json").write_text("{not json")
    with pytest.warns(rngvault.SpoolWarning) as caught:
        assert store.flush() == 0
    said = " ".join(str(w.message) for w in caught)
    assert "refused the spooled record of run alice/r" in said and "unreadable" in said
    assert store.spool.waiting_records() == []
