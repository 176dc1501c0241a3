"""Server test fixtures: snapshot factories, stores, and a real uvicorn server process."""

from __future__ import annotations

import dataclasses
import os
import random
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
from tests import _postgres, _seaweed
from tests._live import ServerProcess


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


@pytest.fixture(scope="session")
def seaweed() -> Iterator[_seaweed.SeaweedServer]:
    """A SeaweedFS S3 server of the session's own (loopback, temp dir), stopped and removed after.

    Tests keep to a prefix of their own (``seaweed.url(prefix)``) and pass ``env=seaweed.env``
    to ``S3Blobs`` (or set the ``AWS_*`` variables with monkeypatch). Skipped where SeaweedFS
    cannot run; with RNGVAULT_REQUIRE_S3=1 that fails.
    """
    _seaweed.require()
    server = _seaweed.SeaweedServer().start()
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
