"""The client against servers and files that lie: hostile listings, garbage bytes, planted
links and spools, a snapshot the server fails on, and times that are not times.

The stand-in servers are small FastAPI apps under a real uvicorn on loopback
(tests/client/_stub.py); where a real store matters, they sit in front of a real
``rngvault serve`` process or a real local store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
from fastapi import FastAPI, Request, Response

import rngvault
from rngvault.stores import LocalStore
from rngvault.stores.http import HttpStore
from rngvault.stores.spool import MAX_ATTEMPTS, Spool
from tests._live import ServerProcess
from tests.client._stub import listing_item, serve
from tests.client.conftest import Run


def _snapshot(seed: int, **changes: object) -> rngvault.Snapshot:
    snap = rngvault.capture({"g": np.random.default_rng(seed)}, include_globals=False)
    return dataclasses.replace(snap, **changes)  # type: ignore[arg-type]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and "client-home" not in p.parts}


def _listing_app(items: list[object], body: bytes = b"\x93garbage") -> tuple[FastAPI, list[str]]:
    """A server that lists ``items`` for every run and answers ``body`` for any other
    path; it records the paths asked for."""
    app = FastAPI()
    asked: list[str] = []

    @app.get("/v1/runs/{namespace}/{run}/snapshots")
    def listing(namespace: str, run: str) -> Response:
        page = {"namespace": namespace, "run": run, "snapshots": items, "next_cursor": None}
        # json.dumps writes NaN and Infinity literals, as a careless server would
        return Response(json.dumps(page), media_type="application/json")

    @app.get("/{path:path}")  # any snapshot, wherever a client's URL for it leads
    def snapshot(path: str) -> Response:
        asked.append(path.removeprefix("v1/runs/alice/exp/snapshots/"))
        return Response(body, media_type="application/msgpack")

    return app, asked


# -- export and import stay in their directory -------------------------------------------


def test_export_refuses_names_a_hostile_listing_gives(rv: Run, tmp_path: Path) -> None:
    """A listing naming ``../../x`` or an absolute path: exit 1 naming it; no file is
    written anywhere and no snapshot is even fetched."""
    absolute = str(tmp_path / "absolute")
    for bad in ("../../escaped", absolute):
        app, asked = _listing_app([listing_item("fine"), listing_item(bad)])
        out = tmp_path / "a" / "b" / "out"
        with serve(app) as url:
            status, _, err = rv("--url", url, "export", "alice/exp", str(out))
        assert status == 1 and repr(bad) in err and "Traceback" not in err
        assert asked == []
        assert not [p for p in _files(tmp_path) if p.name.endswith(".msgpack")]


def test_export_never_writes_bytes_it_did_not_decode(rv: Run, tmp_path: Path) -> None:
    """A server answering garbage for a listed snapshot: exit 1, nothing written."""
    app, asked = _listing_app([listing_item("s0")], body=b"\x81\xa3not a snapshot")
    with serve(app) as url:
        status, _, err = rv("--url", url, "export", "alice/exp", str(tmp_path / "out"))
    assert status == 1 and "alice/exp/s0 rank 0" in err and asked == ["s0"]
    assert not (tmp_path / "out" / "s0.rank-0.msgpack").exists()


def test_export_replaces_a_planted_link_and_never_follows_it(rv: Run, tmp_path: Path) -> None:
    """A symbolic link planted in the export directory under a snapshot's or the
    manifest's file name is replaced by the file; what it pointed at is untouched."""
    store_dir = tmp_path / "store"
    snap = _snapshot(1)
    LocalStore(store_dir).put("alice/exp", "epoch0", rngvault.encode(snap), snap)
    out = tmp_path / "out"
    out.mkdir()
    victims = {}
    for file in ("epoch0.rank-0.msgpack", "manifest.json"):
        victim = tmp_path / f"victim-{file}"
        victim.write_bytes(b"precious")
        (out / file).symlink_to(victim)
        victims[file] = victim
    status, _, err = rv("--url", str(store_dir), "export", "alice/exp", str(out))
    assert status == 0, err
    for file, victim in victims.items():
        assert victim.read_bytes() == b"precious"
        assert not (out / file).is_symlink()
    assert (out / "epoch0.rank-0.msgpack").read_bytes() == rngvault.encode(snap)
    assert json.loads((out / "manifest.json").read_text())["run"] == "alice/exp"


def _exported(rv: Run, tmp_path: Path) -> Path:
    store_dir = tmp_path / "source"
    snap = _snapshot(2)
    LocalStore(store_dir).put("alice/exp", "epoch0", rngvault.encode(snap), snap)
    out = tmp_path / "export"
    assert rv("--url", str(store_dir), "export", "alice/exp", str(out))[0] == 0
    return out


@pytest.mark.parametrize("planted", ["parent", "absolute", "link", "fifo", "bad-name"])
def test_import_reads_only_plain_files_inside_the_directory(
    planted: str, rv: Run, tmp_path: Path
) -> None:
    """A manifest naming ``../file``, an absolute path, a symbolic link to a file outside,
    a FIFO, or a snapshot name that breaks the rules: exit 1 naming it, nothing stored."""
    out = _exported(rv, tmp_path)
    outside = tmp_path / "outside.msgpack"
    outside.write_bytes(rngvault.encode(_snapshot(3)))  # a valid snapshot, outside
    name, file = "epoch9", "epoch9.rank-0.msgpack"
    if planted == "parent":
        file = "../outside.msgpack"
    elif planted == "absolute":
        file = str(outside)
    elif planted == "link":
        (out / file).symlink_to(outside)
    elif planted == "fifo":
        os.mkfifo(out / file)
    else:
        name = "../../x"
        (out / file).write_bytes(outside.read_bytes())
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["snapshots"].append({"name": name, "rank": 0, "file": file})
    (out / "manifest.json").write_text(json.dumps(manifest))
    target = tmp_path / "target"
    status, _, err = rv("--url", str(target), "import", str(out))
    assert status == 1 and "Traceback" not in err
    shown = {"link": "symbolic link", "fifo": "not a regular file", "bad-name": "'../../x'"}
    assert shown.get(planted, repr(file)) in err
    assert LocalStore(target).runs() == []


def test_import_refuses_a_manifest_that_is_a_link(rv: Run, tmp_path: Path) -> None:
    """manifest.json itself must be a file of the directory, not a link to one elsewhere."""
    out = _exported(rv, tmp_path)
    real = tmp_path / "elsewhere.json"
    (out / "manifest.json").rename(real)
    (out / "manifest.json").symlink_to(real)
    status, _, err = rv("--url", str(tmp_path / "target"), "import", str(out))
    assert status == 1 and "symbolic link" in err


# -- times that are not times ----------------------------------------------------------------


def test_ls_shows_a_question_mark_for_a_listed_time_that_is_not_one(
    rv: Run, tmp_path: Path
) -> None:
    """NaN (as rngvault's server writes it, and as a bare literal), infinity, a time past
    the calendar and a string: ls prints "?" for each and exits 0."""
    created: list[object] = ["NaN", float("nan"), float("inf"), "-Infinity", 1e300, "soon"]
    names = [f"t{i}" for i in range(len(created))]
    app, _ = _listing_app([listing_item(n, c) for n, c in zip(names, created, strict=True)])
    with serve(app) as url:
        status, out, err = rv("--url", url, "ls", "alice/exp")
        assert status == 0, err
        rows = [line.split() for line in out.splitlines()[2:]]
        assert sorted(r[0] for r in rows) == names and {r[1] for r in rows} == {"?"}
        status, out, _ = rv("--url", url, "ls", "alice/exp", "--json")
    assert status == 0 and len(json.loads(out)) == len(names)


def _record_path(store: Path, name: str) -> Path:
    return store / "runs" / "alice" / "exp" / name / "rank-0.snap"


@pytest.mark.parametrize("created", [float("nan"), float("inf"), -1e20, "x", None])
def test_ls_of_a_local_store_with_a_tampered_time(created: object, rv: Run, tmp_path: Path) -> None:
    """A local record whose listed time was changed to something that is not a time: ls
    prints "?" for it, exit 0."""
    store = tmp_path / "store"
    snap = _snapshot(4)
    LocalStore(store).put("alice/exp", "s", rngvault.encode(snap), snap)
    path = _record_path(store, "s")
    record = msgpack.unpackb(path.read_bytes())
    record["info"]["created"] = created
    path.write_bytes(msgpack.packb(record))
    status, out, err = rv("--url", str(store), "ls", "alice/exp")
    assert status == 0, err
    assert out.splitlines()[2].split()[:2] == ["s", "?"]


@pytest.mark.parametrize("created", [float("nan"), float("inf"), 1e300])
def test_show_prints_a_question_mark_for_a_time_that_is_not_one(
    created: float, rv: Run, tmp_path: Path
) -> None:
    """A snapshot whose own time is NaN, infinite or past the calendar: show says "?"."""
    store = tmp_path / "store"
    snap = _snapshot(5, created=created)
    LocalStore(store).put("alice/exp", "s", rngvault.encode(snap), snap)
    status, out, err = rv("--url", str(store), "show", "alice/exp", "s")
    assert status == 0, err
    assert "taken ?" in out.splitlines()[0]


# -- a snapshot the server fails on never blocks the others ------------------------------


def _front(real: str, failing: set[str], seen: list[dict[str, str]] | None = None) -> FastAPI:
    """A front for a real server that answers 500 for the snapshot names in ``failing``
    and passes everything else on; it records each request's headers in ``seen``."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "PUT"])
    async def forward(path: str, request: Request) -> Response:
        if seen is not None:
            seen.append(dict(request.headers))
        if request.method == "PUT" and path.rsplit("/", 1)[-1] in failing:
            return Response(
                json.dumps({"error": "internal", "detail": "boom on this one"}),
                status_code=500,
                media_type="application/json",
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with httpx.AsyncClient(base_url=real, timeout=10) as client:
            answer = await client.request(
                request.method,
                "/" + path,
                params=request.query_params,
                content=await request.body(),
                headers=headers,
            )
        return Response(
            answer.content, answer.status_code, media_type=answer.headers.get("content-type")
        )

    return app


def _names_on(url: str, run: str = "alice/exp") -> list[str]:
    try:
        return sorted(i.name for i in HttpStore(url).snapshots(run))
    except rngvault.NotFoundError:
        return []


def test_a_snapshot_the_server_fails_on_is_set_aside_and_the_rest_sent(
    rv: Run, live_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answers 500 for one snapshot (and /healthz 200): it is tried
    MAX_ATTEMPTS times, then set aside in failed/ with the server's error, shown by
    `spool status`; the snapshots after it reach the server meanwhile. Once the server
    is fixed, `spool retry` sends it."""
    monkeypatch.setenv("RNGVAULT_TIMEOUT", "5")
    failing = {"poison"}
    with serve(_front(live_server.url, failing)) as url:
        vault = rngvault.Vault(url, run="alice/exp", on_error="warn")
        vault.track(np.random.default_rng(0), "g")
        with pytest.warns(Warning):  # spooled, then set aside: both say so
            for name in ("poison", "s1", "s2"):
                vault.snapshot(name, durable=True)
            spool = Spool(url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                _names_on(live_server.url) == ["s1", "s2"] and spool.failures()
            ):
                time.sleep(0.1)
        assert _names_on(live_server.url) == ["s1", "s2"]
        [failed] = spool.failures()
        assert (failed.name, failed.attempts, len(spool)) == ("poison", MAX_ATTEMPTS, 0)
        assert "500" in failed.error and "boom on this one" in failed.error

        status, out, _ = rv("spool", "status")
        assert status == 0 and out.splitlines()[0].split()[:4] == [
            "SERVER",
            "WAITING",
            "CONFLICTS",
            "FAILED",
        ]
        assert out.splitlines()[2].split()[:4] == [url, "0", "0", "1"]
        assert f"failed alice/exp/poison#0 for {url}:" in out and "boom on this one" in out

        failing.clear()  # the server is fixed
        vault.close()
        status, _, err = rv("--url", url, "spool", "retry")
        assert status == 0 and "1 failed snapshot(s) to send again" in err
    assert _names_on(live_server.url) == ["poison", "s1", "s2"]
    assert spool.failures() == [] and len(spool) == 0


# -- a token goes only to the server it is for -----------------------------------------


def test_spool_flush_sends_the_token_only_to_the_url_given(
    rv: Run,
    server_factory: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A spool planted for a second loopback server never receives $RNGVAULT_TOKEN:
    `spool flush` sends only the --url's spool; without --url it sends nothing and
    says which servers wait."""
    tokens = tmp_path / "tokens.json"
    status, token, _ = rv(
        "token", "--tokens", str(tokens), "create", "--scope", "write", "--namespace", "alice"
    )
    assert status == 0
    real = server_factory("--tokens", str(tokens))
    monkeypatch.setenv("RNGVAULT_TOKEN", token.strip())
    data = rngvault.encode(_snapshot(6))
    seen: list[dict[str, str]] = []
    with serve(_front(real.url, set(), seen)) as planted:
        Spool(planted).add("alice/exp", "stolen", 0, data)
        Spool(real.url).add("alice/exp", "mine", 0, data)

        status, _, err = rv("spool", "flush")
        assert status == 1 and "pass --url" in err and planted in err and real.url in err
        status, _, err = rv("--url", real.url, "spool", "flush")
        assert status == 0 and "all sent" in err
        assert seen == []
        assert len(Spool(planted)) == 1 and len(Spool(real.url)) == 0
    assert _names_on_with_token(real.url, token.strip()) == ["mine"]


def _names_on_with_token(url: str, token: str) -> list[str]:
    return sorted(i.name for i in HttpStore(url, token=token).snapshots("alice/exp"))
