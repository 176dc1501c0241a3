"""Request and response media: body size limits, content types, Accept negotiation."""

from __future__ import annotations

from fastapi import Request

from rngvault.server.errors import ApiError

MSGPACK = "application/msgpack"
JSON = "application/json"
MSGPACK_TYPES = frozenset(
    {MSGPACK, "application/x-msgpack", "application/vnd.msgpack", "application/octet-stream"}
)


def require_msgpack(request: Request) -> None:
    """415 unless the body is declared as msgpack."""
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media not in MSGPACK_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the snapshot as Content-Type: {MSGPACK}, not {declared or 'no type'!r}",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body is {declared} bytes; the limit is {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "too_large", f"the body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def negotiate(accept: str | None) -> str:
    """MSGPACK or JSON, whichever the Accept header prefers (msgpack for ``*/*`` or none)."""
    if not accept:
        return MSGPACK
    best: tuple[float, int, str] | None = None
    for index, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media in MSGPACK_TYPES or media in ("*/*", "application/*"):
            choice = MSGPACK
        elif media == JSON:
            choice = JSON
        else:
            continue
        if quality > 0 and (best is None or (quality, -index) > (best[0], best[1])):
            best = (quality, -index, choice)
    if best is None:
        raise ApiError(
            406, "not_acceptable", f"cannot answer {accept!r}: ask for {MSGPACK} or {JSON}"
        )
    return best[2]
