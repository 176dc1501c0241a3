"""Server test fixtures: snapshot factories, stores, and a real uvicorn server process."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest

import rngvault
from rngvault import Metadata, Snapshot
from rngvault.server.app import create_app
from rngvault.server.settings import Settings
from rngvault.server.tokens import TokenFile
from tests import _postgres


def make_snapshot(
    seed: int,
    *,
    shared: int = 0,
    rank: int = 0,
    world_size: int = 1,
    step: int | None = None,
    epoch: int | None = None,
) -> Snapshot:
    """Three generators: ``moving`` depends on ``seed``; ``fixed`` and ``legacy`` only on
    ``shared``, so snapshots of one ``shared`` value share two of their three states."""
    moving = np.random.default_rng(seed)
    snapshot = rngvault.capture(
        {
            "moving": moving,
            "fixed": random.Random(shared),
            "legacy": np.random.RandomState(shared),
        },
        include_globals=False,
        metadata=Metadata(
            step=step if step is not None else seed,
            epoch=epoch,
            metrics={"loss": 1.0 / (seed + 1)},
            rank=rank,
            world_size=world_size,
        ),
    )
    return dataclasses.replace(snapshot, created=1_700_000_000.0 + seed)


def make_body(seed: int, **kwargs: int) -> bytes:
    """``make_snapshot`` encoded."""
    return rngvault.encode(make_snapshot(seed, **kwargs))


def noncanonical(body: bytes) -> bytes:
    """The same snapshot with its states map written in reverse order: valid, not canonical."""
    raw = msgpack.unpackb(body, raw=False, strict_map_key=False)
    raw["states"] = dict(reversed(list(raw["states"].items())))
    return msgpack.packb(raw, use_bin_type=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(name="make_snapshot")
def _make_snapshot_fixture() -> Callable[..., Snapshot]:
    return make_snapshot


@pytest.fixture(name="make_body")
def _make_body_fixture() -> Callable[..., bytes]:
    return make_body


@pytest.fixture(name="noncanonical")
def _noncanonical_fixture() -> Callable[[bytes], bytes]:
    return noncanonical


@pytest.fixture(scope="session")
def postgres() -> Iterator[_postgres.PostgresServer]:
    """A PostgreSQL server of the session's own (loopback, temp dir), stopped and removed after.

    Skipped, saying how to get PostgreSQL, where it cannot run; with
    RNGVAULT_REQUIRE_POSTGRES=1 (scripts/test sets it once the binaries are there) that fails.
    """
    reason = _postgres.unavailable()
    if reason is not None:
        if os.environ.get("RNGVAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"RNGVAULT_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    server = _postgres.PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: _postgres.PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """An open server's settings on a fresh database (no tokens file)."""
    return Settings(db=f"sqlite:///{tmp_path / 'api.db'}", tokens=tmp_path / "no-tokens.json")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an open app (lifespan run, client on loopback)."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as test_client,
    ):
        yield test_client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``python -m rngvault serve`` in a subprocess on a free loopback port.

    Attributes:
        db: the SQLite file.
        url: the base URL once started.
    """

    def __init__(self, home: Path, db: Path, *extra: str) -> None:
        self.home = home
        self.db = db
        self.extra = extra
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "RNGVAULT_HOME": str(self.home)}
        log = open(self.home / f"server-{port}.log", "wb")  # noqa: SIM115 (kept by the process)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rngvault",
                "serve",
                "--port",
                str(port),
                "--db",
                f"sqlite:///{self.db}",
                *self.extra,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz in {timeout}s: {self.log()}")

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.home.glob("server-*.log"))

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Makes started servers (``db`` defaults to tmp_path/live.db); stops them all after."""
    started: list[ServerProcess] = []
    home = tmp_path / "home"
    home.mkdir()

    def make(*extra: str, db: Path | None = None) -> ServerProcess:
        server = ServerProcess(home, db or tmp_path / "live.db", *extra)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def live_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A real uvicorn server, open on loopback, on a fresh database."""
    return server_factory()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A real server with a tokens file, shared by a module, and an admin token for it."""
    home = tmp_path_factory.mktemp("token-server")
    _record, token = TokenFile(home / "tokens.json").create("admin", "*")
    server = ServerProcess(home, home / "server.db", "--tokens", str(home / "tokens.json"))
    try:
        yield server.start(), token
    finally:
        server.stop()
