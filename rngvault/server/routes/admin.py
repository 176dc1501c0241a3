"""/v1/admin: store maintenance for admins (retention)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends

from rngvault.server.auth import Principal, Require
from rngvault.server.deps import get_store
from rngvault.server.schemas import GcBody, GcRequest, errors
from rngvault.server.storage.base import Store

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/gc",
    response_model=GcBody,
    summary="Delete old snapshots of the runs a pattern matches (admin; the token's namespaces)",
    responses=errors(401, 403, 422, 503, 507),
)
async def gc(
    request: GcRequest,
    store: Annotated[Store, Depends(get_store)],
    principal: Annotated[Principal, Depends(Require("admin"))],
) -> GcBody:
    """In every run matching ``pattern``, delete the snapshots that every given rule
    selects (beyond the ``keep_last`` newest, stored more than ``older_than`` ago), in
    batches while other requests go on; runs left empty are removed and state blobs no
    snapshot uses are freed. ``dry_run`` only counts."""
    before = None if request.age is None else time.time() - request.age
    collected = await store.collect(
        request.pattern,
        keep_last=request.keep_last,
        stored_before=before,
        namespaces=principal.patterns("admin"),
        dry_run=request.dry_run,
    )
    return GcBody.of(collected, before)
