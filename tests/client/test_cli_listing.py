"""rngvault ls of big runs: pages printed as they come, --limit, a closed pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from fastapi import FastAPI

from rngvault.stores.http import HttpStore
from tests.client._stub import listing_item, serve
from tests.client.conftest import Run

ROOT = Path(__file__).resolve().parents[2]


def _paged_app(
    total: int, hold: threading.Event | None = None, answered: list[int] | None = None
) -> tuple[FastAPI, list[int]]:
    """A server listing ``total`` snapshots of alice/big in pages of the asked size; it
    records each page's offset as asked (and in ``answered`` as answered); with ``hold``,
    the later pages wait for it (at most 20 s)."""
    app = FastAPI()
    asked: list[int] = []

    @app.get("/v1/runs/alice/big/snapshots")
    def listing(limit: int = 1000, cursor: str = "0") -> dict[str, object]:
        start = int(cursor)
        asked.append(start)
        if hold is not None and start > 0:
            hold.wait(20)
        end = min(start + limit, total)
        items = [listing_item(f"s{n:06d}") for n in range(start, end)]
        if answered is not None:
            answered.append(start)
        return {"snapshots": items, "next_cursor": str(end) if end < total else None}

    return app, asked


def _command(url: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "rngvault", "--url", url, "ls", "alice/big", *argv]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RNGVAULT_HOME": str(tmp_path / "client-home")}


def test_ls_prints_the_first_page_before_the_second_is_answered(tmp_path: Path) -> None:
    """The first rows reach the reader while the server still holds back the second page."""
    hold = threading.Event()
    answered: list[int] = []
    app, asked = _paged_app(2500, hold, answered)
    with serve(app) as url:
        proc = subprocess.Popen(
            _command(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path)
        )
        try:
            assert proc.stdout is not None
            header = proc.stdout.readline()
            proc.stdout.readline()  # the dashes
            first = proc.stdout.readline()
            answered_before = list(answered)
            hold.set()
            rest = proc.stdout.read().decode().splitlines()
            assert proc.wait(60) == 0
        finally:
            hold.set()
            proc.kill()
    assert header.split()[0] == b"NAME" and first.split()[0] == b"s000000"
    assert answered_before == [0]  # the row came while page two was held back
    assert len(rest) == 2499 and rest[-1].split()[0] == "s002499"
    assert asked == [0, 1000, 2000]


def test_ls_limit_asks_only_for_what_it_prints(rv: Run) -> None:
    """--limit N prints N rows (and N JSON items) and asks the server for no more."""
    app, asked = _paged_app(5000)
    with serve(app) as url:
        status, out, _ = rv("ls", "alice/big", "--limit", "3", "--url", url)
        assert status == 0 and [r.split()[0] for r in out.splitlines()[2:]] == [
            "s000000",
            "s000001",
            "s000002",
        ]
        assert asked == [0]
        status, out, _ = rv("ls", "alice/big", "--limit", "1500", "--json", "--url", url)
        names = [item["name"] for item in json.loads(out)]
        assert status == 0 and names == [f"s{n:06d}" for n in range(1500)]
        assert asked == [0, 0, 1000]
        assert rv("ls", "alice/big", "--limit", "-1", "--url", url)[0] == 2


def test_iter_snapshots_streams_and_lists_what_snapshots_lists() -> None:
    """HttpStore.iter_snapshots yields the first item after one page; the whole of it is
    what snapshots() returns."""
    app, asked = _paged_app(2100)
    with serve(app) as url:
        store = HttpStore(url)
        first = next(store.iter_snapshots("alice/big"))
        assert first.name == "s000000" and asked == [0]
        assert [i.name for i in store.iter_snapshots("alice/big")] == [
            i.name for i in store.snapshots("alice/big")
        ]
        store.close()


def test_ls_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`rngvault ls big | head -3`: exit 0, no traceback, no broken-pipe error."""
    app, _ = _paged_app(20000)
    with serve(app) as url:
        proc = subprocess.Popen(
            _command(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path)
        )
        assert proc.stdout is not None and proc.stderr is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()  # what head does after its lines
        err = proc.stderr.read().decode()
        status = proc.wait(60)
    assert lines[2].split()[0] == b"s000000"
    assert status == 0 and err == "", err
