"""Client tests run against a real server process on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._live import ServerProcess


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's spool and cache live in the test's temporary directory."""
    home = tmp_path / "client-home"
    monkeypatch.setenv("RNGVAULT_HOME", str(home))
    for name in ("RNGVAULT_SPOOL", "RNGVAULT_STORE", "RNGVAULT_URL", "RNGVAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Makes started servers (the database defaults to tmp_path/live.db); stops them after."""
    started: list[ServerProcess] = []
    home = tmp_path / "server-home"
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
