"""The API docs at ``/docs``: Swagger UI, served from the installed ``swagger-ui-py`` package.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, so it is blank on a machine without
internet access. ``install`` serves the page with FastAPI's ``get_swagger_ui_html`` and
the files it loads from this server (``/docs/static/...``), so the page names no other
origin. The files are those of the ``swagger_ui`` package (PyPI: ``swagger-ui-py``, in the
``server`` extra), which ships Swagger UI 5 (able to render the OpenAPI 3.1 schema FastAPI
writes) with its licence, served at ``/docs/static/LICENSE``. There is no ``/redoc``.

The pages and files need no token, as ``/openapi.json`` needs none; an open server's
``LocalOnly`` checks apply to them as to every request.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from rngvault.server.auth import log

DOCS = "/docs"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
STATIC = "/docs/static"
# The files the page loads, by the name they are served under, with their media types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
}
_PACKAGE = "swagger_ui"


def assets_dir() -> Path | None:
    """The folder of Swagger UI's files in the installed ``swagger_ui`` package, or None
    when it is not installed (found without importing the package)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def install(app: FastAPI) -> None:
    """Serve ``/docs``, ``/docs/oauth2-redirect`` and ``/docs/static/<file>`` on ``app``,
    which must be made with ``docs_url=None`` (FastAPI's own page would load a CDN). Without
    the ``swagger_ui`` package, logs why and serves none of them (``/docs`` answers 404)."""
    folder = assets_dir()
    if folder is None:
        log.warning(
            "no API docs at /docs: Swagger UI's files are missing (the swagger-ui-py "
            "package); install rngvault[server]"
        )
        return

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC}/favicon-32x32.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT,
            # the spec validator badge would send the schema to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(DOCS, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, oauth2_redirect, include_in_schema=False)
    for name, media_type in ASSETS.items():
        app.add_route(
            f"{STATIC}/{name}", _serve(folder / name, media_type), include_in_schema=False
        )


def _serve(path: Path, media_type: str) -> Callable[[Request], Awaitable[FileResponse]]:
    """A handler that answers with one file (one route per file: no path is ever built
    from the request)."""

    async def handler(request: Request) -> FileResponse:
        return FileResponse(path, media_type=media_type)

    return handler
