"""The platform's per-user directories for rngvault: platformdirs' when it is installed.

The core runs with numpy and msgpack alone (a training machine may lack platformdirs), so
platformdirs is imported only when a directory is asked for, and without it these are
the same directories written out by hand: data in ``$XDG_DATA_HOME/rngvault`` (default
``~/.local/share/rngvault``, Linux), ``~/Library/Application Support/rngvault`` (macOS),
``%LOCALAPPDATA%\\rngvault`` (Windows); caches in ``$XDG_CACHE_HOME/rngvault`` (default
``~/.cache/rngvault``), ``~/Library/Caches/rngvault``, ``%LOCALAPPDATA%\\rngvault\\Cache``.
``$RNGVAULT_HOME`` overrides both (``rngvault._config``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType


def _platformdirs() -> ModuleType | None:
    try:
        return importlib.import_module("platformdirs")
    except ImportError:
        return None


def platform_data_dir(environ: Mapping[str, str]) -> Path:
    """The platform's per-user data directory for rngvault."""
    platformdirs = _platformdirs()
    if platformdirs is not None:
        return Path(platformdirs.user_data_dir("rngvault", appauthor=False))
    if sys.platform == "win32":
        return _local_appdata(environ) / "rngvault"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "rngvault"
    return _xdg(environ, "XDG_DATA_HOME", Path(".local", "share")) / "rngvault"


def platform_cache_dir(environ: Mapping[str, str]) -> Path:
    """The platform's per-user cache directory for rngvault."""
    platformdirs = _platformdirs()
    if platformdirs is not None:
        return Path(platformdirs.user_cache_dir("rngvault", appauthor=False))
    if sys.platform == "win32":
        return _local_appdata(environ) / "rngvault" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "rngvault"
    return _xdg(environ, "XDG_CACHE_HOME", Path(".cache")) / "rngvault"


def _local_appdata(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")


def _xdg(environ: Mapping[str, str], name: str, default: Path) -> Path:
    # platformdirs ignores a blank XDG variable, and so does this
    value = environ.get(name, "").strip()
    return Path(value) if value else Path.home() / default
