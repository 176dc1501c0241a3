"""Dependencies routes receive, so tests can swap them with ``app.dependency_overrides``."""

from __future__ import annotations

from fastapi import Request

from rngvault.server.metrics import Metrics
from rngvault.server.settings import Settings
from rngvault.server.storage.base import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics
