"""Dependencies routes receive, so tests can swap them with ``app.dependency_overrides``.

The PUT of a snapshot is the exception: it skips FastAPI's dependency solving (see
``routes/snapshots.py``) and reads ``app.state.store``, ``.settings`` and ``.metrics``
directly, so replace those (``create_app(store=...)``) to change what it uses.

They are coroutines: FastAPI runs plain functions in its thread pool, a costly hop for a
value that is already at hand.
"""

from __future__ import annotations

from fastapi import Request

from rngvault.server.metrics import Metrics
from rngvault.server.settings import Settings
from rngvault.server.storage.base import Store


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics
