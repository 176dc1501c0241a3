"""A store fixture parametrized over every backend that can run here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rngvault.server.storage import open_store
from rngvault.server.storage.base import Store
from rngvault.server.storage.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database of each backend: a SQLite file, a new PostgreSQL database."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
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
