"""Operations: /healthz (no token) and /metrics (no token from this machine)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from rngvault._errors import StoreError
from rngvault.server.auth import metrics_allowed
from rngvault.server.deps import get_metrics, get_store
from rngvault.server.metrics import Metrics
from rngvault.server.schemas import HealthBody, errors
from rngvault.server.storage.base import Store

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=HealthBody,
    summary="Whether the server and its storage answer (no token needed)",
    responses=errors(503),
)
async def healthz(store: Annotated[Store, Depends(get_store)]) -> HealthBody:
    await store.check()
    return HealthBody(status="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics (a token is needed from other machines)",
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **errors(401),
    },
    dependencies=[Depends(metrics_allowed)],
)
async def metrics(
    store: Annotated[Store, Depends(get_store)],
    counters: Annotated[Metrics, Depends(get_metrics)],
) -> PlainTextResponse:
    try:
        snapshots: int | None = await store.count_snapshots()
    except StoreError:
        snapshots = None
    return PlainTextResponse(
        counters.render(snapshots), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
