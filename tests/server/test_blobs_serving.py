"""``rngvault serve --blobs s3://...`` over a real SeaweedFS: what a PUT stores in the bucket
comes back byte-identical, /healthz reports the object store, an object store that is away
answers 503 and clients spool until it is back, a kill -9 during ingest loses no acknowledged
snapshot, and ``rngvault blobs move`` there and back keeps every GET byte-identical."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from rngvault.server.storage.blobs import BLOB_MIN
from tests import _seaweed
from tests._live import ServerProcess

MSGPACK = {"Content-Type": "application/msgpack"}
Body = Callable[..., bytes]


def _url(server: ServerProcess, name: str, run: str = "alice/blobs") -> str:
    return f"{server.url}/v1/runs/{run}/snapshots/{name}"


OUTSIDE = "SELECT count(*) FROM states WHERE external = 1"
INSIDE = "SELECT count(*) FROM states WHERE base IS NULL AND external IS NULL AND {}(data) >= "


def _external(db: Path | str) -> tuple[int, int]:
    """(rows in the bucket, large whole rows still in the database) of an SQLite file or a
    PostgreSQL URL."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as pg:
            outside = pg.execute(OUTSIDE).fetchone()
            inside = pg.execute(INSIDE.format("octet_length") + "%s", (BLOB_MIN,)).fetchone()
    else:
        with sqlite3.connect(db) as conn:
            outside = conn.execute(OUTSIDE).fetchone()
            inside = conn.execute(INSIDE.format("length") + "?", (BLOB_MIN,)).fetchone()
    assert outside is not None and inside is not None
    return int(outside[0]), int(inside[0])


def _objects(seaweed: _seaweed.SeaweedServer, url: str) -> int:
    from rngvault.server.storage.blobs import S3Blobs

    return sum(1 for _ in S3Blobs(url, env=seaweed.env).list_older(-3600))


def _cli(*args: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "rngvault", *args],
        env={**os.environ, "RNGVAULT_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def bucket(seaweed: _seaweed.SeaweedServer) -> str:
    """A prefix of this test's own in the session's bucket."""
    return seaweed.url(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def blob_server(
    seaweed: _seaweed.SeaweedServer, bucket: str, home: Path, tmp_path: Path
) -> Iterator[ServerProcess]:
    server = ServerProcess(home, tmp_path / "vault.db", "--blobs", bucket, env=seaweed.env)
    try:
        yield server.start()
    finally:
        server.stop()


def test_a_put_keeps_its_large_states_in_the_bucket_and_get_returns_the_same_bytes(
    blob_server: ServerProcess, seaweed: _seaweed.SeaweedServer, bucket: str, make_body: Body
) -> None:
    bodies = {f"s{i}": make_body(i, shared=i % 2) for i in range(6)}
    with httpx.Client(timeout=30) as client:
        for name, body in bodies.items():
            assert client.put(
                _url(blob_server, name), content=body, headers=MSGPACK
            ).status_code in (200, 201)
        for name, body in bodies.items():
            answer = client.get(_url(blob_server, name), headers={"Accept": "application/msgpack"})
            assert answer.status_code == 200 and answer.content == body, name
        assert client.get(blob_server.url + "/healthz").json()["status"] == "ok"
    outside, inside = _external(blob_server.db)
    assert outside > 0 and inside == 0  # every large whole state went to the bucket
    assert _objects(seaweed, bucket) == outside  # one object per external row


def test_bad_blobs_urls_stop_serve_and_move_with_one_line(home: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    for args, env in [
        (["serve", "--db", db, "--blobs", "http://bucket/x"], {}),
        (["serve", "--db", db], {"RNGVAULT_BLOBS": "s3://No_Such"}),
        (["blobs", "move", "--db", db, "--to", "s3://a/../b"], {}),
    ]:
        done = _cli(*args, env=env, home=home)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "blobs" in lines[0] and "Traceback" not in done.stderr, lines
    done = _cli("blobs", "move", "--db", db, "--to", "db", env={}, home=home)
    assert done.returncode == 2 and "--blobs" in done.stderr


def test_blobs_and_blobs_move_have_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from rngvault import cli

    for argv in (["blobs"], ["blobs", "move"]):
        assert cli.main([*argv, "--help"]) == 0
        out = capsys.readouterr().out
        assert "Usage: rngvault " + " ".join(argv) in out and "Examples:" in out
    assert cli.main(["serve", "--help"]) == 0
    assert "--blobs s3://BUCKET/PREFIX" in capsys.readouterr().out


def test_with_the_object_store_away_health_fails_puts_answer_503_and_clients_spool(
    home: Path, tmp_path: Path, make_body: Body
) -> None:
    """Its own SeaweedFS, killed and restarted: /healthz is not ok and names the store, a PUT
    answers 503 naming the blob and leaves nothing visible, an HttpStore keeps its snapshots
    in the spool, and sends them all once the object store is back."""
    import rngvault
    from rngvault.stores.http import HttpStore, SpoolWarning
    from rngvault.stores.spool import Spool

    _seaweed.require()
    weed = _seaweed.SeaweedServer().start()
    server = ServerProcess(home, tmp_path / "vault.db", "--blobs", weed.url("away"), env=weed.env)
    try:
        server.start()
        store = HttpStore(server.url, spool=Spool(server.url, tmp_path / "spool"), timeout=30)
        snaps = {f"s{i}": rngvault.decode(make_body(100 + i, shared=100 + i)) for i in range(4)}
        assert store.put("alice/away", "s0", rngvault.encode(snaps["s0"]), snaps["s0"])
        weed.kill()
        with httpx.Client(timeout=60) as client:
            health = client.get(server.url + "/healthz")
            assert health.status_code == 503 and weed.endpoint in health.text, health.text
            answer = client.put(
                _url(server, "direct"), content=make_body(7, shared=7), headers=MSGPACK
            )
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "storage_unavailable"
            assert "blob" in answer.json()["detail"], answer.text
            assert client.get(_url(server, "direct")).status_code == 404  # nothing half-written
        with pytest.warns(SpoolWarning):
            for name in ("s1", "s2", "s3"):
                store.put("alice/away", name, rngvault.encode(snaps[name]), snaps[name])
        assert len(store.spool) == 3
        weed.restart()
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 30  # health comes back once the store answers again
            while client.get(server.url + "/healthz").status_code != 200:
                assert time.monotonic() < deadline, "the server's health did not come back"
                time.sleep(0.2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpoolWarning)
                assert store.flush() == 0
            for name, snap in snaps.items():
                got = client.get(
                    _url(server, name, "alice/away"), headers={"Accept": "application/msgpack"}
                )
                assert got.status_code == 200 and got.content == rngvault.encode(snap), name
        store.close()
    finally:
        server.stop()
        weed.stop()


def test_kill_9_during_ingest_loses_no_acknowledged_snapshot(
    seaweed: _seaweed.SeaweedServer, bucket: str, home: Path, tmp_path: Path, make_body: Body
) -> None:
    server = ServerProcess(home, tmp_path / "vault.db", "--blobs", bucket, env=seaweed.env)
    server.start()
    acknowledged: list[str] = []
    bodies = {f"s{i}": make_body(1000 + i, shared=i % 3) for i in range(300)}
    enough = threading.Event()

    def ingest() -> None:
        with httpx.Client(timeout=30) as client:
            for name, body in bodies.items():
                try:
                    answer = client.put(_url(server, name), content=body, headers=MSGPACK)
                except httpx.TransportError:
                    return  # the server died under this request: not acknowledged
                if answer.status_code in (200, 201):
                    acknowledged.append(name)
                if len(acknowledged) >= 60:
                    enough.set()

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        assert enough.wait(60), "the server acknowledged too few snapshots"
        server.kill9()
        writer.join(60)
        assert not writer.is_alive()
        server.start()
        with httpx.Client(timeout=30) as client:
            for name in acknowledged:
                got = client.get(_url(server, name), headers={"Accept": "application/msgpack"})
                assert got.status_code == 200 and got.content == bodies[name], name
    finally:
        server.stop()
    assert len(acknowledged) >= 60
    assert _external(server.db)[1] == 0


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vault.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_blobs_move_there_and_back_keeps_every_get_byte_identical(
    seaweed: _seaweed.SeaweedServer,
    bucket: str,
    database: str,
    home: Path,
    tmp_path: Path,
    make_body: Body,
) -> None:
    """A store filled without blobs; part moved by the library, the rest by ``blobs move``
    (which resumes), served with --blobs; then moved back with ``--to db`` and served without."""
    from rngvault.server.storage.blobs import S3Blobs
    from rngvault.server.storage.blobs_move import move_out

    where = database.removeprefix("sqlite:///") if database.startswith("sqlite") else database
    bodies = {f"s{i}": make_body(2000 + i, shared=i % 4) for i in range(24)}

    def serving(*extra: str, env: dict[str, str] | None = None) -> ServerProcess:
        return ServerProcess(home, tmp_path / "unused.db", "--db", database, *extra, env=env)

    def check(*extra: str, env: dict[str, str] | None = None) -> None:
        server = serving(*extra, env=env).start()
        try:
            with httpx.Client(timeout=30) as client:
                for name, body in bodies.items():
                    got = client.get(_url(server, name), headers={"Accept": "application/msgpack"})
                    assert got.status_code == 200 and got.content == body, name
        finally:
            server.stop()

    server = serving().start()
    try:
        with httpx.Client(timeout=30) as client:
            for name, body in bodies.items():
                assert client.put(_url(server, name), content=body, headers=MSGPACK).is_success
    finally:
        server.stop()
    outside, large = _external(where)
    assert outside == 0 and large > 2

    first = move_out(database, S3Blobs(bucket, env=seaweed.env), batch=2, limit=2)
    assert (first.states, first.left) == (2, large - 2)
    done = _cli("blobs", "move", "--db", database, "--to", bucket, "--batch", "3",
                env=seaweed.env, home=home)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"moved {large - 2} state blobs"), done.stdout
    assert f"of {large - 2} state blobs" in done.stderr  # progress
    assert _external(where) == (large, 0) and _objects(seaweed, bucket) == large
    check("--blobs", bucket, env=seaweed.env)

    done = _cli("blobs", "move", "--db", database, "--to", "db", "--blobs", bucket,
                env=seaweed.env, home=home)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"moved {large} state blobs"), done.stdout
    assert _external(where) == (0, large)
    check()
