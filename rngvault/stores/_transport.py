"""The one place where httpx's errors and the server's error answers become rngvault errors.

Every httpx exception type maps to a class of the rngvault tree (``MAPPING``; a test fails
if httpx grows a type that is not listed). The server's JSON error body is shown to the
user as it is.
"""

from __future__ import annotations

from typing import Any

from rngvault._errors import (
    AuthError,
    ConflictError,
    DecodeError,
    InvalidNameError,
    MissingExtraError,
    NotFoundError,
    RngVaultError,
    StoreError,
    TransportError,
)

try:
    import httpx
except ImportError:  # pragma: no cover - exercised by the no-extras test
    httpx = None  # type: ignore[assignment]


def require_httpx() -> Any:
    if httpx is None:
        raise MissingExtraError("httpx", "server", "talking to an rngvault server")
    return httpx


def _mapping() -> dict[type[BaseException], type[RngVaultError]]:
    if httpx is None:
        return {}
    retry = TransportError  # the server could not be reached or stopped answering
    never = StoreError  # a request that can never work: wrong URL, scheme or client use
    return {
        httpx.ConnectError: retry,
        httpx.ConnectTimeout: retry,
        httpx.ReadError: retry,
        httpx.ReadTimeout: retry,
        httpx.WriteError: retry,
        httpx.WriteTimeout: retry,
        httpx.PoolTimeout: retry,
        httpx.CloseError: retry,
        httpx.RemoteProtocolError: retry,
        httpx.ProxyError: retry,
        httpx.DecodingError: retry,
        httpx.UnsupportedProtocol: never,
        httpx.LocalProtocolError: never,
        httpx.TooManyRedirects: never,
        httpx.InvalidURL: never,
        httpx.CookieConflict: never,
        httpx.HTTPStatusError: never,
        httpx.RequestNotRead: never,
        httpx.ResponseNotRead: never,
        httpx.StreamClosed: never,
        httpx.StreamConsumed: never,
        # The bases, for anything more specific a later httpx may raise.
        httpx.TimeoutException: retry,
        httpx.NetworkError: retry,
        httpx.ProtocolError: retry,
        httpx.TransportError: retry,
        httpx.RequestError: retry,
        httpx.StreamError: never,
        httpx.HTTPError: never,
    }


MAPPING = _mapping()
CAUGHT: tuple[type[BaseException], ...] = tuple(MAPPING)


def from_httpx(exc: BaseException, url: str) -> RngVaultError:
    """The rngvault error for an httpx exception (most specific class first)."""
    for kind in type(exc).__mro__:
        target = MAPPING.get(kind)
        if target is not None:
            return target(f"{url}: {type(exc).__name__}: {exc}")
    return StoreError(f"{url}: {type(exc).__name__}: {exc}")


def _detail(response: Any) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            return f"{body.get('error', 'error')}: {body['detail']}"
    except ValueError:
        pass
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase


def from_response(response: Any) -> RngVaultError:
    """The rngvault error for a non-2xx answer, with the server's own words."""
    status = response.status_code
    message = f"{response.request.method} {response.request.url} -> {status} {_detail(response)}"
    if status in (401, 403):
        return AuthError(message)
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status == 400 and "invalid_name" in message:
        return InvalidNameError(message)
    if status == 422:
        return DecodeError(message)
    if status >= 500 or status == 408 or status == 429:
        return TransportError(message)
    return StoreError(message)
