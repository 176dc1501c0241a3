"""Who may do what: bearer tokens checked per request, as FastAPI dependencies.

Routes declare what they need with ``Depends(Require("read"))`` (or ``"write"``,
``"admin"``). ``Require`` checks the token, its scope, and that its namespace pattern covers
the namespace the request names (path parameter, else ``namespace`` query parameter).
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
from fnmatch import fnmatchcase
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from rngvault._errors import RngVaultError
from rngvault.server.errors import ApiError, error_response, printable
from rngvault.server.settings import LOOPBACK_NAMES, Settings, is_loopback
from rngvault.server.tokens import SCOPES, TokenFile, TokenRecord, token_hash, token_id

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
        scope: the token's scope.
        namespace: the token's namespace pattern.
    """

    token_id: str | None
    scope: str
    namespace: str


OPEN = Principal(None, "admin", "*")


class Authenticator:
    """Checks ``Authorization: Bearer`` headers against a tokens file, re-read when it changes.

    With ``allow_open`` and no tokens file yet, every request is allowed, until the file
    appears (the first ``rngvault token create``): from then on tokens are required, even
    if the file is removed again.
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

    def _reload(self) -> None:
        try:
            stat = os.stat(self._file.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (0, 0)
        if stamp != (0, 0):
            self._open = False
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
        return Principal(record.id, record.scope, record.namespace)


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
        if SCOPES.index(principal.scope) < SCOPES.index(self.scope):
            raise ApiError(
                403,
                "forbidden",
                f"token {principal.token_id} has scope {principal.scope!r}; "
                f"this needs {self.scope!r}",
            )
        namespace = request.path_params.get("namespace", request.query_params.get("namespace"))
        if namespace is not None and not fnmatchcase(namespace, principal.namespace):
            raise ApiError(
                403,
                "forbidden",
                f"token {principal.token_id} is for namespaces {principal.namespace!r}, "
                f"not {namespace!r}",
            )
        return principal


async def metrics_allowed(request: Request) -> None:
    """/metrics: open to clients on this machine, an admin token otherwise, since the
    counts are store-wide (not declared in OpenAPI as a security requirement, since local
    scrapers need none)."""
    client = request.client.host if request.client else ""
    if not is_loopback(client):
        principal = request.app.state.auth.authenticate(request.headers.get("authorization"))
        if principal.scope != "admin" or principal.namespace != "*":
            raise ApiError(
                403,
                "forbidden",
                f"token {principal.token_id} may not read /metrics: its counts cover every "
                "namespace, so it needs an admin token for namespaces '*'",
            )


def host_of(header: str) -> str:
    """The host name of a ``Host`` header, without its port: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


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
    if settings.tokens_required and not exists:
        raise RngVaultError(
            f"tokens file {str(settings.tokens)!r} does not exist: "
            "create a token with 'rngvault token create'"
        )
    if exists:
        return Authenticator(TokenFile(settings.tokens))
    if not is_loopback(settings.host):
        if not settings.insecure_open:
            raise RngVaultError(
                f"refusing to serve {settings.host} without tokens: anyone who can reach it "
                "could read, write and delete every snapshot. Create a token with "
                "'rngvault token create', or pass --insecure-open to serve it open anyway"
            )
        log.warning("serving %s with no tokens (--insecure-open): anyone may write", settings.host)
    return Authenticator(TokenFile(settings.tokens), allow_open=True)
