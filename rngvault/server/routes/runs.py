"""/v1/runs: list runs, delete a run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from rngvault._names import NAME_RULE, check_name
from rngvault.server.auth import Principal, Require
from rngvault.server.deps import get_store
from rngvault.server.routes import Cursor, Limit, Namespace, Run, check_names
from rngvault.server.schemas import DeletedBody, RunBody, RunPage, errors
from rngvault.server.storage.base import Store

router = APIRouter(prefix="/v1/runs", tags=["runs"])
StoreDep = Annotated[Store, Depends(get_store)]


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
