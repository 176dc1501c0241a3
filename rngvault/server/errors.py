"""Error responses: the one place where errors become HTTP statuses.

Every error answer is JSON, ``{"error": "<code>", "detail": "<what is wrong>"}``:

======  ======================  =========================================================
status  error                   when
======  ======================  =========================================================
400     invalid_name            a namespace, run or snapshot name breaks the naming rule
400     invalid_cursor          a paging cursor this server did not make
401     unauthorized            no token, an unknown, expired or revoked token
403     forbidden               the token's scope or namespace pattern does not allow it;
                                a server without tokens refuses clients on other machines
404     not_found               no such run, snapshot, rank or generator; no such route
406     not_acceptable          the Accept header asks for neither msgpack nor JSON
409     conflict                the snapshot name is taken by other content (other states
                                or user metadata)
413     too_large               the body is over the server's limit
415     unsupported_media_type  a PUT body that is not ``application/msgpack``
421     misdirected_request     a server without tokens, asked for a host that is not
                                this machine (``Host`` other than localhost, 127.0.0.1,
                                [::1] or the allowed hosts)
422     invalid_snapshot        the body is not a valid rngvault snapshot (says why)
422     invalid_record          a run record that is not a JSON object of the right fields
422     invalid_request         a malformed query parameter or header
503     storage_unavailable     the database cannot be reached
507     storage_full            the database or disk is full; nothing was written
======  ======================  =========================================================
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rngvault._errors import (
    ConflictError,
    DecodeError,
    InvalidNameError,
    NotFoundError,
    RngVaultError,
    StoreError,
)
from rngvault.server.storage.base import InvalidCursorError, StoreFullError

log = logging.getLogger("rngvault.server")

# Most specific first: the first matching class decides.
_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (InvalidNameError, 400, "invalid_name"),
    (InvalidCursorError, 400, "invalid_cursor"),
    (DecodeError, 422, "invalid_snapshot"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (StoreFullError, 507, "storage_full"),
    (StoreError, 503, "storage_unavailable"),
)


class ApiError(Exception):
    """An error answer raised by a route or dependency.

    Attributes:
        status: the HTTP status.
        error: the short error code.
        detail: what is wrong, for people.
        headers: extra response headers.
    """

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one log line or message: control characters escaped, length capped."""
    out = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit]
    )
    return out + ("..." if len(text) > limit else "")


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _code(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _rngvault_error(request: Request, exc: Exception) -> JSONResponse:
    for kind, status, error in _STATUS:
        if isinstance(exc, kind):
            if status >= 500:
                log.error(
                    "%s %s: %s", request.method, printable(request.url.path), printable(str(exc))
                )
            return error_response(status, error, str(exc))
    return error_response(400, "bad_request", str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, _code(exc.status_code), str(exc.detail), headers)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RngVaultError, _rngvault_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
