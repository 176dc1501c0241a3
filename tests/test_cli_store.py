"""Store maintenance commands: gc (on the database, or through a server) and vacuum."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import rngvault
from rngvault import cli
from rngvault.server.storage.base import SnapshotKey
from rngvault.server.storage.sqlite import SQLiteStore
from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess


def make_body(seed: int) -> bytes:
    """A snapshot of one generator of its own and one every snapshot shares."""
    states = {"own": np.random.default_rng(seed), "shared": np.random.default_rng(2**40)}
    snapshot = rngvault.capture(states, include_globals=False)
    return rngvault.encode(dataclasses.replace(snapshot, created=1_700_000_000.0 + seed))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every default path points into tmp_path."""
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "home"))
    for name in ("RNGVAULT_DB", "RNGVAULT_TOKENS", "RNGVAULT_URL", "RNGVAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _fill(db: Path, runs: dict[str, int], body: Callable[[int], bytes]) -> None:
    async def fill() -> None:
        store = await SQLiteStore.open(f"sqlite:///{db}")
        try:
            for run, count in runs.items():
                namespace, name = run.split("/")
                for i in range(count):
                    data = body(i)
                    await store.put(
                        SnapshotKey(namespace, name, f"s{i}"), data, rngvault.decode(data)
                    )
        finally:
            await store.close()

    asyncio.run(fill())


def _names(db: Path, run: str) -> list[str]:
    namespace, name = run.split("/")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT s.name FROM snapshots s JOIN runs r ON r.id = s.run_id"
            " WHERE r.namespace = ? AND r.name = ? ORDER BY s.id",
            (namespace, name),
        )
        return [r[0] for r in rows]


def test_gc_on_the_database_says_what_it_would_delete_then_deletes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    _fill(db, {"alice/resnet": 4, "bob/resnet": 2}, make_body)
    url = f"sqlite:///{db}"
    assert cli.main(["gc", "alice/*", "--keep-last", "1", "--dry-run", "--db", url]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"would delete alice/resnet/s{i}" for i in range(3)]
    assert "would delete 3 snapshots (3 ranks) in 1 matching runs; 0 state blobs freed" in err
    assert _names(db, "alice/resnet") == ["s0", "s1", "s2", "s3"]
    assert cli.main(["gc", "alice/*", "--keep-last", "1", "--db", url]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"deleted alice/resnet/s{i}" for i in range(3)]
    # s0 and s1 hold the same states as bob's s0 and s1: only s2's own state is freed
    assert "deleted 3 snapshots (3 ranks) in 1 matching runs; 1 state blobs freed" in err
    assert _names(db, "alice/resnet") == ["s3"]
    assert _names(db, "bob/resnet") == ["s0", "s1"]
    assert cli.main(["gc", "*", "--older-than", "30d", "--db", url]) == 0
    assert "deleted 0 snapshots" in capsys.readouterr().err
    assert cli.main(["vacuum", "--db", url]) == 0
    assert "MiB returned" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gc", "alice/*"], "give --keep-last, --older-than or both"),
        (["gc", "alice/*", "--keep-last", "-1"], "invalid count '-1'"),
        (["gc", "alice/*", "--keep-last", "x"], "invalid count 'x'"),
        (["gc", "alice/*", "--older-than", "soon"], "invalid duration 'soon'"),
        (["gc", "alice/[ab]", "--keep-last", "1"], "invalid RUN-PATTERN"),
        (["gc", "alice/*", "--older-than", "9" * 400 + "d"], "longer than a thousand years"),
    ],
)
def test_gc_usage_errors_exit_2_and_say_why(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*argv, "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert message in capsys.readouterr().err


def test_gc_with_db_acts_on_the_database_whatever_rngvault_url_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--db names the database: a team server in $RNGVAULT_URL is never asked (port 9
    answers nothing here) and never gets $RNGVAULT_TOKEN."""
    db = tmp_path / "store.db"
    _fill(db, {"alice/resnet": 3}, make_body)
    monkeypatch.setenv("RNGVAULT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("RNGVAULT_TOKEN", "rv_secret")
    assert cli.main(["gc", "alice/*", "--keep-last", "1", "--db", f"sqlite:///{db}"]) == 0
    assert _names(db, "alice/resnet") == ["s2"]
    assert "127.0.0.1:9" not in capsys.readouterr().err


def test_gc_through_something_that_is_not_an_rngvault_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A proxy's login page answering 200 with HTML: an error naming it, no traceback."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b"<html>please log in</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert cli.main(["--url", url, "gc", "alice/*", "--keep-last", "1"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "not a gc result" in err and "text/html" in err
    assert err.count("\n") == 1


def test_gc_through_a_real_server_uses_the_admin_route_and_its_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "server.db"
    _fill(db, {"alice/r": 3, "bob/r": 3}, make_body)
    tokens = TokenFile(tmp_path / "tokens.json")
    bob = tokens.create("admin", "bob")[1]
    reader = tokens.create("read", "*")[1]
    server = ServerProcess(tmp_path, db, "--tokens", str(tmp_path / "tokens.json")).start()
    try:
        base = ["--url", server.url, "--token"]
        assert cli.main([*base, bob, "gc", "*", "--keep-last", "1", "--dry-run"]) == 0
        assert "would delete 2 snapshots" in capsys.readouterr().err
        assert cli.main([*base, bob, "gc", "*", "--keep-last", "1"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines() == ["deleted bob/r/s0", "deleted bob/r/s1"]
        assert cli.main([*base, reader, "gc", "*", "--keep-last", "0"]) == 1
        assert "admin" in capsys.readouterr().err
        # checked here, before any request
        assert cli.main([*base, bob, "gc", "*", "--older-than", "3x"]) == 2
        assert "invalid duration '3x'" in capsys.readouterr().err
    finally:
        server.stop()
    assert _names(db, "alice/r") == ["s0", "s1", "s2"]
    assert _names(db, "bob/r") == ["s2"]


def test_every_store_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("backup", "gc", "vacuum"):
        assert cli.main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--db" in out and f"$ rngvault {command}" in out
