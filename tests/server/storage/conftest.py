"""A store fixture parametrized over every backend that can run here.

``BACKENDS`` names each metadata backend, alone or with ``+s3``: then its large states go to
a bucket prefix of the test's own on the session's SeaweedFS server (``store_blobs``), for the
``store`` fixture and for every ``open_store(store_url)`` a test module calls itself.
"""

from __future__ import annotations

import functools
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rngvault.server.storage import open_store
from rngvault.server.storage.base import Store
from rngvault.server.storage.sqlite import SQLiteStore

BACKENDS = ["sqlite", "postgresql", "sqlite+s3", "postgresql+s3"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The metadata backend, ``+s3`` when its large states are kept in a bucket."""
    return str(request.param)


@pytest.fixture
def store_blobs(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str | None:
    """The ``s3://`` URL the store keeps its large states under (None: in its database).

    The ``AWS_*`` variables point at the session's SeaweedFS, and the test modules' own
    ``open_store`` opens with these blobs too (reopening a store must find its objects).
    """
    if not backend.endswith("+s3"):
        return None
    seaweed = request.getfixturevalue("seaweed")
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    url: str = seaweed.url(f"contract-{uuid.uuid4().hex[:12]}")
    with_blobs = functools.partial(open_store, blobs=url)
    for name, module in list(sys.modules.items()):
        if name.startswith("tests.server.") and getattr(module, "open_store", None) is open_store:
            monkeypatch.setattr(module, "open_store", with_blobs)
    return url


@pytest.fixture
def store_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, store_blobs: str | None
) -> str:
    """A URL for an empty database of each backend: a SQLite file, a new PostgreSQL database."""
    if backend.startswith("postgresql"):
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
async def store(store_url: str, store_blobs: str | None) -> AsyncIterator[Store]:
    opened = await open_store(store_url, blobs=store_blobs)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An empty SQLite store in a temporary file."""
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        yield store
    finally:
        await store.close()
