"""Store tests never touch the user's data directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RNGVAULT_HOME (spool, cache, default store) inside the test's temporary directory."""
    home = tmp_path / "rngvault-home"
    monkeypatch.setenv("RNGVAULT_HOME", str(home))
    monkeypatch.delenv("RNGVAULT_SPOOL", raising=False)
    monkeypatch.delenv("RNGVAULT_STORE", raising=False)
    monkeypatch.delenv("RNGVAULT_URL", raising=False)
    return home
