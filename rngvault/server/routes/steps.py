"""/v1/runs/{namespace}/{run}/steps: a run's snapshots that recorded a step, by step.

Bisecting two runs and restoring "the snapshot of step N" read this listing: one row per
snapshot (step, name, states digest and, on request, one generator's state hash), in pages
of up to ``MAX_LIMIT``. The page is written as JSON directly: validating 10,000 rows through
the response model, or even ``json.dumps`` of a dict per row, would cost more than reading
them from the store; ``StepPage`` still describes the answer in the OpenAPI schema.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from rngvault._names import GENERATOR_NAME_RULE, check_generator_name
from rngvault.server.auth import Require
from rngvault.server.deps import get_store
from rngvault.server.routes import MAX_RANK, Cursor, Namespace, Run, check_names
from rngvault.server.schemas import StepPage, errors
from rngvault.server.storage.base import Store

router = APIRouter(prefix="/v1/runs/{namespace}/{run}/steps", tags=["steps"])
StoreDep = Annotated[Store, Depends(get_store)]
MAX_LIMIT = 10_000
STEP_MIN, STEP_MAX = -(2**63), 2**64 - 1  # what a snapshot's msgpack step can hold
_SAFE_INT = 2**53 - 1  # larger integers are written as strings (rngvault._json)


@router.get(
    "",
    response_model=StepPage,
    summary="List a run's snapshots that recorded a step, by step (then in the order stored)",
    responses=errors(400, 401, 403, 404, 422, 503),
    dependencies=[Depends(Require("read"))],
)
async def list_steps(
    namespace: Namespace,
    run: Run,
    store: StoreDep,
    rank: Annotated[int, Query(ge=0, le=MAX_RANK, description="the process rank")] = 0,
    start: Annotated[
        int | None, Query(ge=STEP_MIN, le=STEP_MAX, description="the first step wanted")
    ] = None,
    generator: Annotated[
        str | None,
        Query(
            description=f"also give this generator's state hash ({GENERATOR_NAME_RULE})",
            json_schema_extra={"pattern": f"^{GENERATOR_NAME_RULE}$"},
        ),
    ] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")] = 1000,
) -> Response:
    check_names(namespace, run)
    if generator is not None:
        check_generator_name(generator)
    page = await store.steps(
        namespace,
        run,
        rank=rank,
        start=start,
        generator=generator,
        cursor=cursor,
        limit=limit,
    )
    # Written by hand, 2.5x faster than json.dumps of dicts: names match NAME_RULE (checked
    # on every PUT) and digests are hex, so none of them needs escaping; steps past 2**53
    # are strings, as ``to_jsonable`` writes them.
    parts = []
    for row in page.items:
        step = row.step if -_SAFE_INT <= row.step <= _SAFE_INT else f'"{row.step}"'
        state = "null" if row.state is None else f'"{row.state}"'
        parts.append(
            f'{{"step":{step},"name":"{row.name}","digest":"{row.digest}","state":{state}}}'
        )
    body = f'{{"steps":[{",".join(parts)}],"next_cursor":{json.dumps(page.next_cursor)}}}'
    return Response(body, media_type="application/json")
