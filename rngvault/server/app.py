"""The app factory: ``create_app(settings)``; its lifespan opens the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rngvault._version import __version__
from rngvault.server import docs, errors
from rngvault.server.auth import Authenticator, LocalOnly, authenticator_for, log
from rngvault.server.metrics import Metrics, MetricsMiddleware
from rngvault.server.render import Renderer
from rngvault.server.routes import admin, batch, ops, runs, seeds, snapshots, steps
from rngvault.server.settings import Settings
from rngvault.server.storage import location, open_store
from rngvault.server.storage.base import Store
from rngvault.server.ui import routes as ui

DESCRIPTION = """Stores rngvault snapshots: the exact states of a training run's random number
generators, as msgpack (docs/format.md). Snapshots are immutable: a PUT of a taken name
answers 200 for the same snapshot (the same states and user metadata: step, epoch, tags,
metrics, rank, world size; its time and environment may differ) and 409 for other content.
Send tokens as
`Authorization: Bearer <token>`. Errors are JSON: `{"error": ..., "detail": ...}`."""


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The app. ``store`` and ``authenticator`` replace what ``settings`` would open (tests).

    Raises RngVaultError when the settings are unsafe (no tokens on a non-loopback host).
    """
    settings = settings or Settings.from_env()
    auth = authenticator or authenticator_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store if store is not None else await open_store(settings.db, blobs=settings.blobs)
        if store is None:
            log.info("database %s", location(settings.db))
            if settings.blobs is not None:
                log.info("state blobs in %s", settings.blobs)
        app.state.store = opened
        try:
            yield
        finally:
            app.state.renderer.close()
            if store is None:
                await opened.close()

    app = FastAPI(
        title="rngvault",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # docs.install serves /docs from the installed package, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.auth = auth
    app.state.metrics = Metrics()
    app.state.renderer = Renderer()
    if store is not None:
        app.state.store = store
    errors.install(app)
    docs.install(app)
    for router in (
        snapshots.router,
        batch.router,
        steps.router,
        runs.router,
        seeds.router,
        admin.router,
        ops.router,
    ):
        app.include_router(router)
    app.include_router(ui.root)  # / redirects to the pages
    app.include_router(ui.router)
    app.add_middleware(LocalOnly, auth=auth, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory rngvault.server.app:app_from_env``: settings from RNGVAULT_*,
    with the rules of ``rngvault serve``: no tokens on a non-loopback ``RNGVAULT_HOST`` only
    with ``RNGVAULT_INSECURE_OPEN``, and an open server answers only clients on this machine
    (``LocalOnly``) whatever address uvicorn was told to bind. The connection limits and
    timeouts of ``rngvault serve`` are uvicorn's own options here (``rngvault serve
    --workers`` starts its workers through this too, with its own protocol and limits)."""
    from rngvault.server import serving

    serving.limit_logs()
    return create_app(Settings.from_env())
