"""POST /v1/runs/{namespace}/{run}/batch: store many snapshots of a run in one request.

The body is a msgpack array of ``[name, snapshot]`` items (``snapshot``: the bytes a
single PUT would send), ``Content-Type: application/msgpack``. Each item is checked and
stored on its own, exactly as ``PUT .../snapshots/{name}`` would (its rank from its
metadata): one bad item refuses only itself. The answer is 200 with one result per item,
in item order, holding the status and error a single PUT would have answered. Every item
answered 201 or 200 is durable when the answer is sent.

The bounds are checked while the body streams in: at most ``MAX_ITEMS`` items, and at most
``items x (max_body + ITEM_FRAMING)`` bytes (each item's snapshot at most ``max_body``), and
never more than ``batch_limit(max_body)`` bytes as a whole (the body is held in memory).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import anyio
import msgpack
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rngvault._errors import RngVaultError
from rngvault._format import decode
from rngvault._snapshot import Snapshot
from rngvault.server.auth import Require
from rngvault.server.errors import _STATUS, ApiError
from rngvault.server.media import MSGPACK, require_msgpack
from rngvault.server.routes import MAX_RANK, Namespace, Run, check_names
from rngvault.server.schemas import BatchBody, errors
from rngvault.server.storage.base import SnapshotKey, Store

router = APIRouter(prefix="/v1/runs/{namespace}/{run}", tags=["snapshots"])
MAX_ITEMS = 256
ITEM_FRAMING = 256  # bytes allowed per item beyond its snapshot: the name and msgpack headers
MAX_BATCH_BYTES = 64 * 1024 * 1024  # a batch body as a whole, unless one item needs more
_INLINE_DECODE = 256 * 1024  # larger bodies are decoded off the event loop
_SHAPE = "send a msgpack array of [name, snapshot bytes] items"
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            f"a msgpack array of 1 to {MAX_ITEMS} items, each [name, snapshot]: the snapshot's "
            "name and its encoded bytes (docs/format.md), as a single PUT would send them"
        ),
        "content": {MSGPACK: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _count(head: bytes) -> int | None:
    """The item count of a msgpack array header at the start of ``head`` (None: too few
    bytes yet); ApiError 400 when the body is no array."""
    first = head[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first in (0xDC, 0xDD):
        size = 2 if first == 0xDC else 4
        if len(head) < 1 + size:
            return None
        count: int = struct.unpack(">H" if size == 2 else ">I", head[1 : 1 + size])[0]
        return count
    raise ApiError(400, "invalid_batch", f"the body is not a msgpack array: {_SHAPE}")


def batch_limit(max_body: int) -> int:
    """The most bytes a batch body may hold as a whole, whatever its item count: 64 MiB, or
    one item of ``max_body`` bytes with its name where that is more."""
    return max(MAX_BATCH_BYTES, max_body + ITEM_FRAMING)


def _bound(count: int, max_body: int) -> int:
    """The most bytes a body of ``count`` items may hold (ApiError for a count out of
    bounds): ``count`` items of at most ``max_body`` bytes, never over ``batch_limit``."""
    if count == 0:
        raise ApiError(400, "invalid_batch", f"the batch is empty: {_SHAPE}")
    if count > MAX_ITEMS:
        raise ApiError(
            413, "too_large", f"the batch has {count} items; the limit is {MAX_ITEMS} per request"
        )
    return min(count * (max_body + ITEM_FRAMING), batch_limit(max_body))


def _over(size: str, limit: int, count: int | None, max_body: int) -> ApiError:
    """The 413 for a body of ``size`` bytes over ``limit``, naming the bound that set it."""
    if limit == batch_limit(max_body):
        why = f"the limit for a whole batch is {limit} bytes"
    elif count is None:
        why = (
            f"a batch holds at most {MAX_ITEMS} items of at most {max_body} bytes each "
            f"({limit} bytes with names)"
        )
    else:
        why = f"the limit for {count} items of at most {max_body} bytes each is {limit}"
    return ApiError(413, "too_large", f"the body is {size} bytes; {why}")


async def _read(request: Request, max_body: int) -> bytes:
    """The body, streamed: 413 as soon as it is over the bound its item count allows."""
    limit = _bound(MAX_ITEMS, max_body)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _over(declared, limit, None, max_body)
    head = bytearray()
    count: int | None = None
    async for chunk in request.stream():
        head += chunk
        if count is None and head:
            count = _count(bytes(head[:5]))
            if count is not None:
                limit = _bound(count, max_body)
        if len(head) > limit:
            raise _over(f"over {limit}", limit, count, max_body)
    if not head:
        raise ApiError(400, "invalid_batch", f"the body is empty: {_SHAPE}")
    if count is None:
        raise ApiError(400, "invalid_batch", f"the body ends inside its array header: {_SHAPE}")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _over(declared, limit, count, max_body)
    return bytes(head)


def _items(body: bytes) -> list[Any]:
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        detail = f"the body is not valid msgpack ({exc}): {_SHAPE}"
        raise ApiError(400, "invalid_batch", detail) from None
    assert isinstance(items, list)  # _count saw an array header
    return items


class _Refused(Exception):
    """One item's refusal, as a single PUT would answer it."""

    def __init__(self, status: int, error: str, detail: str, name: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.name = status, error, detail, name

    def result(self, rank: int | None = None) -> dict[str, Any]:
        return _result(self.name, rank, self.status, error=self.error, detail=self.detail)


def _result(
    name: str | None,
    rank: int | None,
    status: int,
    *,
    digest: str | None = None,
    size: int | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "rank": rank,
        "status": status,
        "digest": digest,
        "size": size,
        "error": error,
        "detail": detail,
    }


def _refusal(exc: RngVaultError, name: str | None) -> _Refused:
    """The status and code the error handlers give ``exc`` (``rngvault.server.errors``)."""
    for kind, status, error in _STATUS:
        if isinstance(exc, kind):
            return _Refused(status, error, str(exc), name)
    return _Refused(400, "bad_request", str(exc), name)


Checked = tuple[str, bytes, Snapshot]


def _check(item: Any, namespace: str, run: str, max_body: int) -> Checked:
    """An item's name, body and decoded snapshot, or ``_Refused`` for it."""
    if (
        not isinstance(item, list)
        or len(item) != 2
        or not isinstance(item[0], str)
        or not isinstance(item[1], bytes)
    ):
        name = item[0] if isinstance(item, list) and item and isinstance(item[0], str) else None
        raise _Refused(
            400, "invalid_batch", f"an item must be [name (str), snapshot (bin)]: {_SHAPE}", name
        )
    name, body = item
    try:
        check_names(namespace, run, name)
    except RngVaultError as exc:
        raise _refusal(exc, name) from None
    if len(body) > max_body:
        raise _Refused(
            413, "too_large", f"the body is {len(body)} bytes; the limit is {max_body}", name
        )
    try:
        snapshot = decode(body)
    except RngVaultError as exc:
        raise _refusal(exc, name) from None
    own = snapshot.metadata.rank
    if own > MAX_RANK:
        raise _Refused(422, "invalid_snapshot", f"metadata.rank {own} is over {MAX_RANK}", name)
    return name, body, snapshot


def _check_all(
    items: list[Any], namespace: str, run: str, max_body: int
) -> list[Checked | _Refused]:
    checked: list[Checked | _Refused] = []
    for item in items:
        try:
            checked.append(_check(item, namespace, run, max_body))
        except _Refused as refused:
            checked.append(refused)
    return checked


def _waves(checked: list[Checked | _Refused]) -> list[list[tuple[int, Checked]]]:
    """The valid items in waves stored one after another: an item goes in the wave after
    the last one holding its name and rank, so that repeats of a name are stored in item
    order (201 first, then 200 or 409), as single PUTs sent in turn would be."""
    waves: list[list[tuple[int, Checked]]] = []
    last: dict[tuple[str, int], int] = {}
    for i, one in enumerate(checked):
        if isinstance(one, _Refused):
            continue
        key = (one[0], one[2].metadata.rank)
        wave = last.get(key, -1) + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append((i, one))
        last[key] = wave
    return waves


async def _store(store: Store, namespace: str, run: str, item: Checked) -> dict[str, Any]:
    name, body, snapshot = item
    rank = snapshot.metadata.rank
    try:
        stored = await store.put(SnapshotKey(namespace, run, name, rank), body, snapshot)
    except RngVaultError as exc:
        return _refusal(exc, name).result(rank)
    status = 201 if stored.created else 200
    return _result(name, rank, status, digest=stored.digest, size=stored.size)


@router.post(
    "/batch",
    response_model=BatchBody,
    summary="Store many snapshots of a run; each item is answered on its own",
    openapi_extra=_BODY,
    responses=errors(400, 401, 403, 413, 415, 422, 503),
    dependencies=[Depends(Require("write"))],
)
async def put_batch(request: Request, namespace: Namespace, run: Run) -> JSONResponse:
    check_names(namespace, run)
    require_msgpack(request)
    state = request.app.state
    max_body: int = state.settings.max_body
    body = await _read(request, max_body)
    if len(body) <= _INLINE_DECODE:
        checked = _check_all(_items(body), namespace, run, max_body)
    else:
        items = await anyio.to_thread.run_sync(_items, body)
        checked = await anyio.to_thread.run_sync(_check_all, items, namespace, run, max_body)
    results: list[dict[str, Any] | None] = [
        one.result() if isinstance(one, _Refused) else None for one in checked
    ]
    for wave in _waves(checked):
        # Stored concurrently: the SQLite writer commits puts that wait together in one
        # transaction; each put returns once its own write is durable.
        answers = await asyncio.gather(
            *(_store(state.store, namespace, run, one) for _, one in wave)
        )
        for (i, _one), answer in zip(wave, answers, strict=True):
            results[i] = answer
    metrics = state.metrics
    for result in results:
        assert result is not None
        metrics.batch_items[result["status"]] += 1
        metrics.snapshots_stored += result["status"] == 201
    return JSONResponse({"namespace": namespace, "run": run, "results": results})
