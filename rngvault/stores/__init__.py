"""Stores: where a Vault keeps snapshots (a local directory, or an rngvault server)."""

from __future__ import annotations

import os
import re

from rngvault._config import client_config
from rngvault._errors import StoreError
from rngvault.stores.base import SnapshotInfo, StepEntry, Store
from rngvault.stores.local import LocalStore

__all__ = ["LocalStore", "SnapshotInfo", "StepEntry", "Store", "open_store"]

# host:port or host:port/path: a server address, not a directory name
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+:\d{1,5}(/.*)?")


_CORE_METHODS = ("put", "get", "snapshots", "runs", "flush", "close")


def open_store(
    store: str | os.PathLike[str] | Store | None = None, *, token: str | None = None
) -> Store:
    """A Store from a directory, a ``file://`` URL, an ``http(s)://`` URL, or a Store.

    With nothing given: ``$RNGVAULT_URL`` when set, else the embedded local store
    (``$RNGVAULT_STORE`` or the per-user data directory).
    """
    if store is None:
        config = client_config()
        store = config.url or config.store
    if not isinstance(store, (str, os.PathLike)) and all(
        callable(getattr(store, method, None)) for method in _CORE_METHODS
    ):
        return store  # a Store (older ones, without steps(), are ones too)
    text = os.fspath(store)  # type: ignore[arg-type]
    if text.lower().startswith(("http://", "https://")):
        import importlib

        http = importlib.import_module("rngvault.stores.http")
        return http.HttpStore(text, token=token)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise StoreError(
            f"unsupported store URL {text!r}: use http://, https://, file:// or a directory"
        )
    elif _HOST_PORT.fullmatch(text) and not os.path.exists(text):
        raise StoreError(
            f"{text!r} looks like a server address without its scheme: write "
            f"http://{text} (or ./{text} for a local directory of that name)"
        )
    return LocalStore(text)
