"""How every rngvault command is used: --url/--token anywhere, the snapshot reference
forms, close-name suggestions, exit codes, auth errors that say what to do, the store
named, import sending several at once, the spool commands."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI, Request, Response

import rngvault
from rngvault.stores.spool import Spool
from tests._live import ServerProcess
from tests.client._stub import serve
from tests.client.conftest import Run


def _snapshot(seed: int, steps: int = 0) -> rngvault.Snapshot:
    g = np.random.default_rng(seed)
    g.bit_generator.random_raw(steps)
    return rngvault.capture({"g": g})


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A local store holding alice/exp with s0 and s1 (g advanced 5 draws) and s0b (= s0)."""
    root = tmp_path / "store"
    local = rngvault.LocalStore(root)
    for name, snap in (("s0", _snapshot(1)), ("s1", _snapshot(1, 5)), ("s0b", _snapshot(1))):
        local.put("alice/exp", name, rngvault.encode(snap), snap)
    return str(root)


def test_url_and_token_may_come_before_or_after_the_command(
    rv: Run, store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`ls RUN --url X` is `--url X ls RUN`; $RNGVAULT_URL is the default; a --url after the
    command wins over one before it."""
    before = rv("--url", store, "ls", "alice/exp")
    after = rv("ls", "alice/exp", "--url", store)
    assert before[0] == after[0] == 0 and before[1] == after[1]
    monkeypatch.setenv("RNGVAULT_URL", store)
    assert rv("ls", "alice/exp")[1] == before[1]
    empty = str(tmp_path / "empty")
    assert rv("--url", empty, "ls", "alice/exp", "--url", store)[1] == before[1]
    status, _, err = rv("--url", store, "ls", "alice/exp", "--url", empty)
    assert status == 1 and "no run alice/exp" in err


def test_every_command_takes_snapshot_references_the_same_way(
    rv: Run, store: str, tmp_path: Path
) -> None:
    """ns/run/name and `ns/run name` name the same snapshot in show, verify, pull, push and
    diff; a name alone follows the run named before it."""
    for command in ("show", "verify"):
        joined = rv(command, "alice/exp/s1", "--json", "--url", store)
        apart = rv(command, "alice/exp", "s1", "--json", "--url", store)
        assert joined[0] == apart[0] == 0 and joined[1] == apart[1], command
    one, two = tmp_path / "one.msgpack", tmp_path / "two.msgpack"
    assert rv("pull", "alice/exp/s1", "-o", str(one), "--url", store)[0] == 0
    assert rv("pull", "alice/exp", "s1", "-o", str(two), "--url", store)[0] == 0
    assert one.read_bytes() == two.read_bytes()
    assert rv("push", str(one), "bob/copy/s1", "--url", store)[0] == 0
    diffs = [
        rv("diff", *words, "--json", "--url", store)
        for words in (
            ("alice/exp", "s0", "s1"),
            ("alice/exp/s0", "s1"),
            ("alice/exp/s0", "alice/exp/s1"),
            ("alice/exp", "s0", "bob/copy/s1"),
        )
    ]
    distances = [json.loads(out)["entries"][0]["distance"] for _, out, _ in diffs]
    assert {status for status, _, _ in diffs} == {0} and distances == [5, 5, 5, 5]
    for words in (("s1",), ("alice/exp/s1", "extra")):
        status, _, err = rv("show", *words, "--url", store)
        assert status == 2 and "NAMESPACE/RUN/NAME" in err, words
    status, out, _ = rv("show", "alice/exp", "--url", store)  # a run alone: its record
    assert status == 0 and out.startswith("run alice/exp")


def test_a_missing_run_suggests_close_names(rv: Run, store: str) -> None:
    """A run that is not there is exit 1 naming the store and the runs close to it."""
    for argv in (("ls", "alice/exq"), ("show", "alice/exq/s0"), ("diff", "alice/exq", "a", "b")):
        status, _, err = rv(*argv, "--url", store)
        assert status == 1 and err.count("\n") == 1, argv
        assert f"no run alice/exq in {store}; did you mean alice/exp?" in err, argv
    status, _, err = rv("ls", "zed/nothing-alike", "--url", store)
    assert status == 1 and "no run zed/nothing-alike" in err and "did you mean" not in err


def test_diff_exit_code_says_whether_anything_moved(rv: Run, store: str) -> None:
    """--exit-code: 1 when a generator moved, 0 when none did; without it, 0 either way."""
    assert rv("diff", "alice/exp", "s0", "s1", "--exit-code", "--url", store)[0] == 1
    assert rv("diff", "alice/exp", "s0", "s0b", "--exit-code", "--url", store)[0] == 0
    assert rv("diff", "alice/exp", "s0", "s1", "--url", store)[0] == 0


def test_runs_names_the_store_it_looked_in(rv: Run, store: str, tmp_path: Path) -> None:
    status, out, err = rv("runs", "--url", store)
    assert (status, out.split()) == (0, ["alice/exp"]) and store in err
    status, out, err = rv("runs", "--url", str(tmp_path / "none"))
    assert status == 0 and out == "" and f"0 run(s) in {tmp_path / 'none'}" in err


def test_auth_errors_say_what_to_do(
    rv: Run, server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """No token, a wrong one, one without the right grant: exit 1, one line saying to set
    RNGVAULT_TOKEN or pass --token, never the request's URL with its query string."""
    tokens = tmp_path / "tokens.json"
    status, reader, _ = rv("token", "--tokens", str(tokens), "create", "--grant", "read:bob")
    assert status == 0
    server = server_factory("--tokens", str(tokens))
    file = tmp_path / "s.msgpack"
    file.write_bytes(rngvault.encode(_snapshot(2)))
    for argv in (
        ("ls", "alice/exp"),
        ("ls", "alice/exp", "--token", "rv_garbage"),
        ("push", str(file), "bob/exp/s", "--token", reader.strip()),
    ):
        status, _, err = rv(*argv, "--url", server.url)
        assert status == 1 and err.count("\n") == 1, argv
        assert "set RNGVAULT_TOKEN or pass --token" in err, argv
        assert "?" not in err and "/v1/" not in err, err


def test_import_sends_several_snapshots_at_once(rv: Run, store: str, tmp_path: Path) -> None:
    """Over HTTP, import has more than one PUT in flight (a server that takes 0.3 s each)."""
    for n in range(8):
        snap = _snapshot(10 + n)
        rngvault.LocalStore(store).put("carol/many", f"s{n}", rngvault.encode(snap), snap)
    assert rv("export", "carol/many", str(tmp_path / "out"), "--url", store)[0] == 0
    app = FastAPI()
    in_flight, most, lock = [0], [0], threading.Lock()

    @app.put("/v1/runs/{ns}/{run}/snapshots/{name}")
    async def put(request: Request) -> Response:
        await request.body()
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        await asyncio.sleep(0.3)
        with lock:
            in_flight[0] -= 1
        return Response(status_code=201)

    with serve(app) as url:
        status, _, err = rv("import", str(tmp_path / "out"), "--url", url)
    assert status == 0 and "imported 8 snapshot file(s) into carol/many (8 new)" in err
    assert most[0] > 1


def test_import_checks_every_file_before_the_first_send(
    rv: Run, store: str, tmp_path: Path
) -> None:
    """A manifest naming a missing file: exit 1 naming it, nothing stored; a file that
    does not decode, found while streaming: exit 1 naming it and saying how many went."""
    out = tmp_path / "out"
    assert rv("export", "alice/exp", str(out), "--url", store)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    target = tmp_path / "target"
    manifest["snapshots"].append({"name": "gone", "rank": 0, "file": "gone.rank-0.msgpack"})
    (out / "manifest.json").write_text(json.dumps(manifest))
    status, _, err = rv("import", str(out), "--url", str(target))
    assert status == 1 and "gone.rank-0.msgpack" in err
    assert rngvault.LocalStore(target).runs() == []
    manifest["snapshots"].pop()
    (out / "manifest.json").write_text(json.dumps(manifest))
    last = out / manifest["snapshots"][-1]["file"]
    last.write_bytes(b"\x81\xa3not a snapshot")
    status, _, err = rv("import", str(out), "--url", str(target))
    assert status == 1 and str(last) in err and "2 of 3 stored before it" in err


# -- spool ----------------------------------------------------------------------------------


def test_spool_status_omits_empty_spools_and_flush_says_when_nothing_waits(
    rv: Run, live_server: ServerProcess
) -> None:
    """A spool emptied by a flush is not listed; flushing it again says nothing waits."""
    data = rngvault.encode(_snapshot(3))
    Spool(live_server.url).add("alice/exp", "s", 0, data)
    status, out, _ = rv("spool", "status")
    assert status == 0 and live_server.url in out
    assert rv("spool", "flush", "--url", live_server.url)[0] == 0
    status, out, err = rv("spool", "status")
    assert status == 0 and out == "" and "the spool is empty" in err
    status, _, err = rv("spool", "flush", "--url", live_server.url)
    assert status == 0 and f"{live_server.url}: nothing waits" in err


def test_spool_list_retry_and_drop_manage_refused_snapshots(
    rv: Run, server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A snapshot refused for its token is listed as refused; retry with a good token sends
    it; drop deletes a conflict for good."""
    tokens = tmp_path / "tokens.json"
    status, token, _ = rv("token", "--tokens", str(tokens), "create", "--grant", "write:alice")
    server = server_factory("--tokens", str(tokens))
    spool = Spool(server.url)
    data = rngvault.encode(_snapshot(4))
    spool.add("alice/exp", "refused", 0, data, bucket="refused", error="401 unauthorized")
    spool.add("alice/exp", "clash", 0, data, conflict=True)
    status, out, _ = rv("spool", "list", "--json", "--url", server.url)
    listed = {e["snapshot"]: e["bucket"] for e in json.loads(out)}
    assert status == 0 and listed == {
        "alice/exp/refused#0": "refused",
        "alice/exp/clash#0": "conflict",
    }
    status, _, err = rv("spool", "retry", "--url", server.url, "--token", "rv_wrong")
    assert status == 1 and "still wait" in err
    status, _, err = rv("spool", "retry", "--url", server.url, "--token", token.strip())
    assert status == 0 and "1 refused snapshot(s) to send again" in err and "all sent" in err
    assert rngvault.fetch("alice/exp", "refused", url=server.url, token=token.strip())
    status, _, err = rv("spool", "drop", "alice/exp/clash#0", "--url", server.url)
    assert status == 0 and "dropped 1 snapshot(s)" in err
    assert rv("spool", "list", "--url", server.url)[2].strip() == "the spool is empty"
    assert rv("spool", "drop", "--url", server.url)[0] == 2  # nothing named
