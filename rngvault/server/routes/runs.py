"""/v1/runs: list runs, read a run and its record, write its record once, delete a run."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from rngvault._names import NAME_RULE, check_name
from rngvault._record import RECORD_MAX_BYTES, RecordError, record_json
from rngvault.server.auth import Principal, Require
from rngvault.server.deps import get_store
from rngvault.server.errors import ApiError
from rngvault.server.media import JSON, read_body
from rngvault.server.routes import Cursor, Limit, Namespace, Run, check_names
from rngvault.server.schemas import (
    DeletedBody,
    RecordBody,
    RunBody,
    RunDetailBody,
    RunPage,
    errors,
)
from rngvault.server.storage.base import Store

router = APIRouter(prefix="/v1/runs", tags=["runs"])
StoreDep = Annotated[Store, Depends(get_store)]
RECORD_BODY_MAX = 2 * RECORD_MAX_BYTES  # a record's JSON with room for whitespace
_RECORD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the run's record: a JSON object (fields: seed, seeding, config, git, "
        f"command, host, environment, created; at most {RECORD_MAX_BYTES} bytes as compact JSON)",
        "content": {JSON: {"schema": {"type": "object"}}},
    }
}


@router.get(
    "",
    response_model=RunPage,
    summary="List runs, by namespace then name (only namespaces the token covers)",
    responses=errors(400, 401, 403, 422, 503),
)
async def list_runs(
    store: StoreDep,
    principal: Annotated[Principal, Depends(Require("read"))],
    namespace: Annotated[
        str | None,
        Query(
            description=f"only this namespace ({NAME_RULE})",
            json_schema_extra={"pattern": f"^{NAME_RULE}$"},
        ),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> RunPage:
    if namespace is not None:
        check_name(namespace, "namespace")
    page = await store.list_runs(
        namespace=namespace, pattern=principal.patterns("read"), cursor=cursor, limit=limit
    )
    return RunPage(runs=[RunBody.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/{namespace}/{run}",
    response_model=DeletedBody,
    summary="Delete a run and all its snapshots (admin)",
    responses=errors(400, 401, 403, 404, 422, 503),
    dependencies=[Depends(Require("admin"))],
)
async def delete_run(namespace: Namespace, run: Run, store: StoreDep) -> DeletedBody:
    check_names(namespace, run)
    deleted = await store.delete_run(namespace, run)
    return DeletedBody(namespace=namespace, run=run, deleted=deleted)


@router.get(
    "/{namespace}/{run}",
    response_model=RunDetailBody,
    summary="A run: its counts and its record ({} for a run without one)",
    responses=errors(400, 401, 403, 404, 422, 503),
    dependencies=[Depends(Require("read"))],
)
async def get_run(namespace: Namespace, run: Run, store: StoreDep) -> RunDetailBody:
    check_names(namespace, run)
    info, record = await store.run_info(namespace, run)
    return RunDetailBody(**RunBody.of(info).model_dump(), record=json.loads(record))


async def _record_body(request: Request) -> str:
    """The request's record as ``record_json`` text, or ApiError naming what is wrong."""
    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() != JSON:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the record as Content-Type: {JSON}, not {declared or 'no type'!r}",
        )
    body = await read_body(request, RECORD_BODY_MAX)
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(422, "invalid_record", f"the body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_record", f"the body is not JSON: {exc}") from None
    except ValueError as exc:  # an int of too many digits
        raise ApiError(422, "invalid_record", f"the body is not usable JSON: {exc}") from None
    except RecursionError:
        raise ApiError(422, "invalid_record", "the body is nested too deep to read") from None
    try:
        return record_json(value)
    except RecordError as exc:
        raise ApiError(422, "invalid_record", str(exc)) from None
    except UnicodeEncodeError:
        raise ApiError(
            422, "invalid_record", "a string of the record holds a lone surrogate (\\ud800-\\udfff)"
        ) from None


@router.put(
    "/{namespace}/{run}/record",
    status_code=201,
    response_model=RecordBody,
    summary="Write a run's record once (201 kept, 200 the run already had one: that one)",
    openapi_extra=_RECORD_BODY,
    responses={200: {"model": RecordBody}, **errors(400, 401, 403, 413, 415, 422, 503, 507)},
    dependencies=[Depends(Require("write"))],
)
async def put_record(request: Request, namespace: Namespace, run: Run, store: StoreDep) -> Any:
    check_names(namespace, run)
    record = await _record_body(request)
    created, stored = await store.put_record(namespace, run, record)
    answer = {"created": created, "record": json.loads(stored)}
    return JSONResponse(answer, status_code=201 if created else 200)
