"""/v1/runs/{namespace}/{run}/snapshots: put, get, list and delete snapshots."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

from rngvault._format import decode
from rngvault._snapshot import Snapshot
from rngvault.server.auth import Require
from rngvault.server.deps import get_store
from rngvault.server.errors import ApiError
from rngvault.server.media import JSON, MSGPACK, negotiate, read_body, require_msgpack
from rngvault.server.render import Renderer
from rngvault.server.routes import MAX_RANK, Cursor, Limit, Name, Namespace, Run, check_names
from rngvault.server.schemas import DeletedBody, SnapshotInfoBody, SnapshotPage, StoredBody, errors
from rngvault.server.storage.base import SnapshotKey, Store

router = APIRouter(prefix="/v1/runs/{namespace}/{run}/snapshots", tags=["snapshots"])
StoreDep = Annotated[Store, Depends(get_store)]
Rank = Annotated[int | None, Query(ge=0, le=MAX_RANK, description="the process rank")]
_INLINE_DECODE = 256 * 1024  # larger bodies are decoded off the event loop
_MSGPACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "an encoded rngvault snapshot (docs/format.md)",
        "content": {MSGPACK: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_SNAPSHOT_CONTENT = {
    MSGPACK: {"schema": {"type": "string", "format": "binary"}},
    JSON: {"schema": {"type": "object", "description": "the JSON rendering (rngvault._json)"}},
}


async def _decode(body: bytes) -> Snapshot:
    if len(body) <= _INLINE_DECODE:
        return decode(body)
    return await anyio.to_thread.run_sync(decode, body)


async def put_snapshot(
    request: Request, namespace: Namespace, run: Run, name: Name, rank: Rank = None
) -> Response:
    check_names(namespace, run, name)
    require_msgpack(request)
    state = request.app.state
    body = await read_body(request, state.settings.max_body)
    snapshot = await _decode(body)
    own = snapshot.metadata.rank
    if rank is not None and rank != own:
        raise ApiError(
            422, "invalid_snapshot", f"rank={rank} but the snapshot's metadata.rank is {own}"
        )
    if own > MAX_RANK:
        raise ApiError(422, "invalid_snapshot", f"metadata.rank {own} is over {MAX_RANK}")
    stored = await state.store.put(SnapshotKey(namespace, run, name, own), body, snapshot)
    if stored.created:
        state.metrics.snapshots_stored += 1
    answer = {
        "namespace": namespace,
        "run": run,
        "name": name,
        "rank": own,
        "digest": stored.digest,
        "size": stored.size,
        "created": stored.created,
    }
    return JSONResponse(answer, status_code=201 if stored.created else 200)


# ``Rank`` itself, checked by pydantic as FastAPI checks it on the other routes.
_RANK = TypeAdapter(Rank)


def _query_rank(request: Request) -> int | None:
    """The ``rank`` query parameter (the last one given), checked as FastAPI checks ``Rank``."""
    values = request.query_params.getlist("rank")
    if not values:
        return None
    try:
        rank: int | None = _RANK.validate_python(values[-1])
        return rank
    except ValidationError as exc:
        problem = exc.errors()[0].get("msg", "invalid")
        raise ApiError(
            422, "invalid_request", f"query.rank: {problem} (got {values[-1][:40]!r})"
        ) from None


async def _ingest(request: Request) -> Response:
    _WRITE.check(request)
    params = request.path_params
    return await put_snapshot(
        request, params["namespace"], params["run"], params["name"], _query_rank(request)
    )


class _IngestRoute(APIRoute):
    """PUT .../snapshots/{name}, the route that carries the ingest load.

    OpenAPI describes it from ``put_snapshot``'s signature like any other route, but its
    handler skips FastAPI's per-request dependency solving and response validation, which
    cost as much as storing a snapshot: ``_ingest`` checks the token and the rank itself and
    calls ``put_snapshot`` directly (FastAPI's documented way to customise a route).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return _ingest


_WRITE = Require("write")
router.add_api_route(
    "/{name}",
    put_snapshot,
    methods=["PUT"],
    status_code=201,
    response_model=StoredBody,
    summary="Store a snapshot (201 new, 200 the same snapshot, 409 other content)",
    openapi_extra=_MSGPACK_BODY,
    responses={200: {"model": StoredBody}, **errors(400, 401, 403, 409, 413, 415, 422, 503, 507)},
    dependencies=[Depends(_WRITE)],
    route_class_override=_IngestRoute,
)


@router.get(
    "/{name}",
    summary="Fetch a snapshot as msgpack (exact stored bytes) or as JSON",
    response_class=Response,
    responses={200: {"content": _SNAPSHOT_CONTENT}, **errors(400, 401, 403, 404, 406, 422, 503)},
    dependencies=[Depends(Require("read"))],
)
async def get_snapshot(
    request: Request,
    namespace: Namespace,
    run: Run,
    name: Name,
    store: StoreDep,
    rank: Annotated[int, Query(ge=0, le=MAX_RANK, description="the process rank")] = 0,
    generators: Annotated[
        str | None, Query(max_length=8192, description="comma-separated generator names")
    ] = None,
) -> Response:
    check_names(namespace, run, name)
    media = negotiate(request.headers.get("accept"))
    body = await store.get(SnapshotKey(namespace, run, name, rank))
    if media == MSGPACK and generators is None:
        return Response(body, media_type=MSGPACK)
    renderer: Renderer = request.app.state.renderer
    return Response(await renderer(body, media, generators), media_type=media)


@router.get(
    "",
    response_model=SnapshotPage,
    summary="List a run's snapshots (metadata only), in the order they were stored",
    responses=errors(400, 401, 403, 404, 422, 503),
    dependencies=[Depends(Require("read"))],
)
async def list_snapshots(
    namespace: Namespace,
    run: Run,
    store: StoreDep,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> SnapshotPage:
    check_names(namespace, run)
    page = await store.list_snapshots(namespace, run, cursor=cursor, limit=limit)
    return SnapshotPage(
        namespace=namespace,
        run=run,
        snapshots=[SnapshotInfoBody.of(info) for info in page.items],
        next_cursor=page.next_cursor,
    )


@router.delete(
    "/{name}",
    response_model=DeletedBody,
    summary="Delete every rank of a snapshot (admin)",
    responses=errors(400, 401, 403, 404, 422, 503),
    dependencies=[Depends(Require("admin"))],
)
async def delete_snapshot(
    namespace: Namespace, run: Run, name: Name, store: StoreDep
) -> DeletedBody:
    check_names(namespace, run, name)
    deleted = await store.delete_snapshot(namespace, run, name)
    return DeletedBody(namespace=namespace, run=run, name=name, deleted=deleted)
