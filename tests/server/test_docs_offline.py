"""/docs works without internet: Swagger UI 5 served by the server itself, nothing from
another origin, under the same auth rules as /openapi.json; rendered in a real Chromium
with every other origin blocked."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from rngvault.server import docs
from rngvault.server.app import create_app
from rngvault.server.settings import Settings
from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
# What the page must load, by the tag and attribute that name it.
LOADED = re.compile(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]*)\"")
MEDIA = {"js": "text/javascript", "css": "text/css", "png": "image/png"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real open server (``rngvault serve``) on a loopback port."""
    home = tmp_path_factory.mktemp("docs-server")
    process = ServerProcess(home, home / "server.db")
    try:
        yield process.start()
    finally:
        process.stop()


def swagger_ui_version(bundle: str) -> tuple[int, ...]:
    """The version Swagger UI's bundle stamps into itself (``PACKAGE_VERSION:"5.24.2"``)."""
    found = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle)
    assert found, "no PACKAGE_VERSION in the bundle: not Swagger UI's swagger-ui-bundle.js?"
    return tuple(map(int, found.groups()))


def test_docs_page_loads_only_its_own_files_and_they_are_swagger_ui_5(
    server: ServerProcess,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text
        loaded = LOADED.findall(page.text)
        assert sorted(loaded) == [
            "/docs/static/favicon-32x32.png",
            "/docs/static/swagger-ui-bundle.js",
            "/docs/static/swagger-ui.css",
        ]
        assert "url: '/openapi.json'" in page.text
        for url in loaded:
            answer = client.get(url)
            assert answer.status_code == 200, url
            assert answer.headers["content-type"].startswith(MEDIA[url.rsplit(".", 1)[1]]), url
            assert len(answer.content) == int(answer.headers["content-length"]) > 0
        bundle = client.get("/docs/static/swagger-ui-bundle.js").text
        assert swagger_ui_version(bundle) >= (5, 0, 0)
        licence = client.get("/docs/static/LICENSE")
        assert licence.status_code == 200 and "Apache License" in licence.text
        assert client.get("/docs/static/swagger-ui-bundle.js.map").status_code == 404
        assert client.get("/docs/static/../../docs.py").status_code == 404
        spec = client.get("/openapi.json")
        assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")
        assert "/v1/runs" in spec.json()["paths"]
        assert "/docs" not in spec.json()["paths"]
        assert client.get("/redoc").status_code == 404  # nothing left that would load a CDN


@pytest.mark.anyio
async def test_a_proxys_root_path_prefixes_every_url_of_the_page(tmp_path: Path) -> None:
    settings = Settings(db=f"sqlite:///{tmp_path / 'api.db'}", tokens=tmp_path / "none.json")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000), root_path="/vault")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        page = (await client.get("/vault/docs")).text
    urls = LOADED.findall(page)
    assert urls and all(url.startswith("/vault/docs/static/") for url in urls), urls
    assert "url: '/vault/openapi.json'" in page
    assert "'/vault/docs/oauth2-redirect'" in page


async def _client(settings: Settings, address: str, base: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base) as client,
    ):
        yield client


PAGES = [
    "/docs",
    "/docs/oauth2-redirect",
    *(f"/docs/static/{name}" for name in docs.ASSETS),
    "/openapi.json",
]


@pytest.mark.anyio
async def test_with_tokens_the_docs_need_none_as_openapi_json_needs_none(tmp_path: Path) -> None:
    """As before: /docs and /openapi.json are public; the data routes still need a token."""
    TokenFile(tmp_path / "tokens.json").create("read", "*")
    settings = Settings(
        host="0.0.0.0", db=f"sqlite:///{tmp_path / 'a.db'}", tokens=tmp_path / "tokens.json"
    )
    async for client in _client(settings, "192.0.2.10", "http://vault.lab"):
        for path in PAGES:
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/v1/runs")).status_code == 401


@pytest.mark.anyio
async def test_an_open_server_keeps_its_docs_to_its_own_machine(tmp_path: Path) -> None:
    """LocalOnly covers the docs and their files as it covers every request."""
    settings = Settings(db=f"sqlite:///{tmp_path / 'o.db'}", tokens=tmp_path / "none.json")
    async for client in _client(settings, "192.0.2.10", "http://127.0.0.1"):
        for path in PAGES:
            assert (await client.get(path)).status_code == 403, path
    async for client in _client(settings, "127.0.0.1", "http://attacker.example"):
        for path in PAGES:
            assert (await client.get(path)).status_code == 421, path
    async for client in _client(settings, "127.0.0.1", "http://localhost:8000"):
        for path in PAGES:
            assert (await client.get(path)).status_code == 200, path


def test_without_swagger_ui_files_the_store_still_runs_and_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setattr(docs, "_PACKAGE", "rngvault_no_such_package")
    settings = Settings(db=f"sqlite:///{tmp_path / 'm.db'}", tokens=tmp_path / "none.json")
    with caplog.at_level(logging.WARNING, logger="rngvault.server"):
        app = create_app(settings)
    assert "swagger-ui-py" in caplog.text and "rngvault[server]" in caplog.text
    with TestClient(app, client=("127.0.0.1", 50000), base_url="http://127.0.0.1") as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/v1/runs").status_code == 200


def test_chromium_renders_the_docs_with_every_other_origin_blocked(server: ServerProcess) -> None:
    """Swagger UI draws one block per operation of the OpenAPI 3.1 schema, with no console
    error, while every request to another origin is aborted (and none is made)."""
    if not CHROMIUM.exists():
        print(f"skipped: no Chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    operations = sum(
        method in {"get", "put", "post", "delete", "patch"}
        for item in spec["paths"].values()
        for method in item
    )
    blocked: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page()

            def route(request_route) -> None:  # type: ignore[no-untyped-def]
                url = request_route.request.url
                if url.startswith(server.url + "/"):
                    request_route.continue_()
                else:
                    blocked.append(url)
                    request_route.abort()

            page.route("**/*", route)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/docs", wait_until="load", timeout=20_000)
            page.wait_for_selector(".opblock", timeout=20_000)
            assert page.locator(".opblock").count() == operations
            assert "OAS 3.1" in page.locator(".info .version-stamp").inner_text()
            assert page.locator("h2.title").first.inner_text().startswith("rngvault")
        finally:
            browser.close()
    assert blocked == []
    assert errors == []
