"""Where rngvault keeps its files by default."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def data_dir() -> Path:
    """The per-user data directory (``$RNGVAULT_HOME`` overrides it)."""
    override = os.environ.get("RNGVAULT_HOME")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "rngvault"


def default_store() -> Path:
    """The embedded store a Vault uses when given none: ``$RNGVAULT_STORE`` or the data dir."""
    configured = os.environ.get("RNGVAULT_STORE")
    return Path(configured).expanduser() if configured else data_dir() / "store"
