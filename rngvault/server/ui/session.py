"""Who a page request acts as: the token in the ``rngvault_token`` cookie (set by
``/ui/login``) or in an ``Authorization: Bearer`` header, checked by the API's
``Authenticator`` with the API's scopes. Only the pages read the cookie; the API routes
read the header alone, so a browser's cookie never authorises an API call (or a write).

Cross-site posts: the cookie is ``SameSite=Strict`` and ``HttpOnly``, and the two POST
routes (login, logout) refuse a request whose ``Origin`` (or, without one, ``Referer``)
names another site than the ``Host`` it was sent to. A client that sends neither (curl,
scripts) is not a browser carrying someone else's cookie and is let through.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import Request, Response

from rngvault.server.auth import Authenticator, Principal
from rngvault.server.errors import ApiError

COOKIE = "rngvault_token"
COOKIE_PATH = "/ui"
MAX_FORM = 16 * 1024  # a login form's body: a token and where to go next


class PageError(Exception):
    """An error page: its status and what is wrong, for people.

    Attributes:
        status: the HTTP status.
        title: a short heading.
        detail: what is wrong and what to do.
    """

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


class LoginNeeded(Exception):
    """No usable token: the page redirects to the login form.

    Attributes:
        reason: why (no token, unknown, expired or revoked token).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def principal_for_token(request: Request, token: str) -> Principal:
    """The principal of ``token``, or ApiError 401 from the authenticator."""
    return authenticator(request).authenticate(f"Bearer {token.strip()}")


def principal(request: Request) -> Principal:
    """The principal of a page request, who must be able to read some namespace.

    LoginNeeded without a valid token; PageError 403 for a token with no read grant.
    """
    header = request.headers.get("authorization")
    if header is None:
        cookie = request.cookies.get(COOKIE)
        header = f"Bearer {cookie}" if cookie else None
    try:
        found = authenticator(request).authenticate(header)
    except ApiError as exc:
        raise LoginNeeded(exc.detail) from None
    if not found.patterns("read"):
        raise PageError(403, "Forbidden", "this token has no read grant")
    return found


def check_namespace(found: Principal, namespace: str) -> None:
    """PageError 403 unless ``found`` may read ``namespace``; the message names only the
    namespace asked for, never the token's own patterns."""
    if not found.allows("read", namespace):
        raise PageError(403, "Forbidden", f"this token may not read namespace {namespace!r}")


def same_site(request: Request) -> bool:
    """Whether a POST comes from a page of this server (see the module docstring)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    if source == "null":
        return False
    parts = urlsplit(source)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def set_cookie(request: Request, response: Response, token: str) -> None:
    """The token cookie: HttpOnly, SameSite=Strict, limited to /ui, Secure over https."""
    response.set_cookie(
        COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def local_next(value: str | None) -> str:
    """Where to go after login: a path under /ui on this server, else /ui (no open redirect)."""
    if value and value.startswith("/ui") and "//" not in value and "\\" not in value:
        return value
    return "/ui"


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a small ``application/x-www-form-urlencoded`` body (the last value of
    each); anything else, or a body over MAX_FORM bytes, reads as no fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[-1] for k, v in fields.items()}
