"""Who may do what: bearer tokens checked per request, as FastAPI dependencies.

Routes declare what they need with ``Depends(Require("read"))`` (or ``"write"``,
``"admin"``). ``Require`` checks the token, and that one of its grants has the scope and a
namespace pattern covering the namespace the request names (path parameter, else
``namespace`` query parameter). Listings show the namespaces of the grants that may read.
Without a tokens file the server is open: every request acts as an admin for every
namespace, which ``authenticator_for`` allows only on a loopback host unless told otherwise.
An open server also checks every request itself (``LocalOnly``), however it was started:
the client must be on this machine (unless ``insecure_open``) and the ``Host`` header must
name it, so that neither a process bound to ``0.0.0.0`` by mistake nor a web page that
rebinds its own DNS name to 127.0.0.1 reaches the store.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from rngvault._errors import RngVaultError
from rngvault.server.errors import ApiError, error_response, printable
from rngvault.server.settings import LOOPBACK_NAMES, Settings, host_of, is_loopback
from rngvault.server.tokens import SCOPES, Grant, TokenFile, TokenRecord, token_hash, token_id

log = logging.getLogger("rngvault.server")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rngvault"'}
_RECHECK = 1.0  # seconds between looks at the tokens file's modification time
# Declares the scheme in OpenAPI (the Authorize button of /docs); Require reads the header.
_bearer = HTTPBearer(auto_error=False, description="a token from 'rngvault token create'")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as.

    Attributes:
        token_id: the token's id, or None on an open server.
        grants: what the token may do.
    """

    token_id: str | None
    grants: tuple[Grant, ...]

    def patterns(self, scope: str) -> tuple[str, ...]:
        """The namespace patterns of the grants that include ``scope``."""
        return tuple(dict.fromkeys(g.namespace for g in self.grants if g.allows(scope)))

    def allows(self, scope: str, namespace: str) -> bool:
        return any(g.allows(scope) and g.covers(namespace) for g in self.grants)

    def describe(self) -> str:
        """``token 3f9a1c2b7d4e (read:*, write:bob)``."""
        return f"token {self.token_id} ({', '.join(map(str, self.grants))})"


OPEN = Principal(None, (Grant("admin", "*"),))


class Authenticator:
    """Checks ``Authorization: Bearer`` headers against a tokens file, re-read when it changes.

    With ``allow_open`` and no tokens file yet, every request is allowed, until the file
    appears (the first ``rngvault token create``): from then on tokens are required, even
    if the file is removed again (then no token is accepted until it is back). Both changes
    are logged.
    """

    def __init__(self, tokens: TokenFile, *, allow_open: bool = False) -> None:
        self._file = tokens
        self._open = allow_open
        self._by_id: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload()

    @property
    def open(self) -> bool:
        """No tokens yet: every request is allowed (see ``authenticator_for``)."""
        return self._open

    @property
    def _path(self) -> str:
        return str(self._file.path.resolve())

    def _reload(self) -> None:
        try:
            stat = os.stat(self._file.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (0, 0)
        if stamp != (0, 0) and self._open:
            self._open = False
            log.warning("tokens file %s appeared: tokens are required from now on", self._path)
        elif stamp == (0, 0) and self._stamp not in (None, (0, 0)):
            log.warning("tokens file %s is gone: no token is accepted until it is back", self._path)
        elif stamp != (0, 0) and self._stamp == (0, 0) and not self._open:
            log.warning("tokens file %s is back: its tokens are accepted again", self._path)
        if stamp != self._stamp:
            self._by_id = {r.id: r for r in self._file.load()}
            self._stamp = stamp

    def authenticate(self, header: str | None) -> Principal:
        now = time.monotonic()
        if now - self._checked > _RECHECK:
            with self._lock:
                self._checked = now
                try:
                    self._reload()
                except RngVaultError as exc:  # keep the tokens we had; say why
                    log.error("tokens file not reloaded: %s", exc)
        if self._open:
            return OPEN
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", _CHALLENGE)
        token = token.strip()
        record = self._by_id.get(token_id(token) or "")
        if record is None or not hmac.compare_digest(record.sha256, token_hash(token)):
            raise ApiError(401, "unauthorized", "unknown token", _CHALLENGE)
        if not record.active(time.time()):
            why = "revoked" if record.revoked is not None else "expired"
            raise ApiError(401, "unauthorized", f"token {record.id} is {why}", _CHALLENGE)
        return Principal(record.id, record.grants)


class Require:
    """A dependency: the request's principal, if it has ``scope`` over the named namespace."""

    def __init__(self, scope: str) -> None:
        assert scope in SCOPES
        self.scope = scope

    async def __call__(
        self,
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return self.check(request)

    def check(self, request: Request) -> Principal:
        """The principal, or ApiError 401/403 (for routes that call it directly)."""
        auth: Authenticator = request.app.state.auth
        principal = auth.authenticate(request.headers.get("authorization"))
        patterns = principal.patterns(self.scope)
        if not patterns:
            raise ApiError(403, "forbidden", f"{principal.describe()} has no {self.scope!r} grant")
        namespace = request.path_params.get("namespace", request.query_params.get("namespace"))
        if namespace is not None and not principal.allows(self.scope, namespace):
            raise ApiError(
                403,
                "forbidden",
                f"{principal.describe()} may {self.scope} namespaces "
                f"{', '.join(map(repr, patterns))}, not {namespace!r}",
            )
        return principal


async def metrics_allowed(request: Request) -> None:
    """/metrics: open to clients on this machine that address it by a loopback name (or an
    allowed host), an admin token otherwise, since the counts are store-wide (not declared
    in OpenAPI as a security requirement, since local scrapers need none)."""
    client = request.client.host if request.client else ""
    settings: Settings = request.app.state.settings
    named = host_of(request.headers.get("host", ""))
    hosts = LOOPBACK_NAMES + settings.allowed_hosts
    # a page in the user's browser that rebinds its name to 127.0.0.1 is not a local scraper
    if not is_loopback(client) or not (named in hosts or "*" in hosts):
        principal = request.app.state.auth.authenticate(request.headers.get("authorization"))
        if "*" not in principal.patterns("admin"):
            raise ApiError(
                403,
                "forbidden",
                f"{principal.describe()} may not read /metrics: its counts cover every "
                "namespace, so it needs an admin token for namespaces '*' (the grant admin:*)",
            )


class LocalOnly:
    """ASGI middleware: while the server has no tokens, answer only requests from this
    machine (403 otherwise, unless ``insecure_open``) whose ``Host`` names this machine
    (``localhost``, ``127.0.0.1``, ``[::1]`` with any port, or ``allowed_hosts``; 421
    otherwise). A server with tokens passes every request through."""

    def __init__(self, app: ASGIApp, auth: Authenticator, settings: Settings) -> None:
        self.app = app
        self.auth = auth
        self.hosts = frozenset(LOOPBACK_NAMES + settings.allowed_hosts)
        self.any_host = "*" in self.hosts
        self.any_client = settings.insecure_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.auth.open:
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> ASGIApp | None:
        client = scope.get("client")
        if not self.any_client and client is not None and not is_loopback(str(client[0])):
            return error_response(
                403,
                "forbidden",
                f"this server has no tokens, so it answers only clients on its own machine, "
                f"not {printable(str(client[0]))}: create a token ('rngvault token create') "
                "to serve other machines",
            )
        if self.any_host:
            return None
        header = next((v for k, v in scope["headers"] if k == b"host"), b"")
        host = host_of(header.decode("latin-1"))
        if host not in self.hosts:
            return error_response(
                421,
                "misdirected_request",
                f"this server has no tokens, so it answers only requests addressed to "
                f"localhost, 127.0.0.1 or [::1], not Host {printable(header.decode('latin-1'))!r}"
                " (a web page may be trying to reach it): use one of those names, add this "
                "one to RNGVAULT_ALLOWED_HOSTS, or create a token",
            )
        return None


def authenticator_for(settings: Settings) -> Authenticator:
    """The authenticator ``settings`` ask for, or RngVaultError saying why it may not start."""
    exists = settings.tokens.is_file()
    create = f"'rngvault token create --tokens {settings.tokens.resolve()}'"
    if settings.tokens_required and not exists:
        raise RngVaultError(
            f"tokens file {str(settings.tokens)!r} does not exist: create a token with {create}"
        )
    if exists:
        return Authenticator(TokenFile(settings.tokens))
    if not is_loopback(settings.host):
        if not settings.insecure_open:
            raise RngVaultError(
                f"refusing to serve {settings.host} without tokens: anyone who can reach it "
                f"could read, write and delete every snapshot. Create a token with {create}, "
                "or pass --insecure-open to serve it open anyway"
            )
        log.warning("serving %s with no tokens (--insecure-open): anyone may write", settings.host)
    return Authenticator(TokenFile(settings.tokens), allow_open=True)
