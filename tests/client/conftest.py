"""Client tests run against a real server process on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's spool and cache live in the test's temporary directory."""
    home = tmp_path / "client-home"
    monkeypatch.setenv("RNGVAULT_HOME", str(home))
    for name in ("RNGVAULT_SPOOL", "RNGVAULT_STORE", "RNGVAULT_URL", "RNGVAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home
