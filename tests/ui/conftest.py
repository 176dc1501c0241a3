"""The pages in a real browser: a real server, runs pushed by real Vaults, Debian's Chromium.

One server for the session (``python -m rngvault serve`` on a loopback port, with a tokens
file holding an admin token and one limited to reading ``alice``), filled over HTTP by
Vaults:

- ``alice/baseline``: five snapshots (``step-10`` ... ``step-50``), two generators drawn from
  between them; its last snapshot carries the hostile tag ``<script>alert(1)</script>``.
- ``alice/repro``: the same run, except for one planted extra draw of ``augment`` just before
  ``step-30``: from there on it is ahead of the baseline by that draw.
- ``bob/private``: a run alice's token must not see.

Playwright drives ``/usr/bin/chromium`` (Debian's package; scripts/test installs it as
root). Without it, or without Playwright, the tests skip saying why; with
``RNGVAULT_REQUIRE_BROWSER=1`` (scripts/test sets it once Chromium is there) they fail.

Every page a test opens is watched: a console error, an uncaught exception, a failed or
4xx/5xx request, a JavaScript dialog or any request to another origin (each one is blocked)
fails the test at teardown. Each page is screenshotted into ``$RNGVAULT_TEST_ARTIFACTS/ui``
(pytest's temporary directory when unset); with ``RNGVAULT_UPDATE_SCREENSHOTS=1`` the tests
that show a page in docs/ui.md also rewrite its picture in docs/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess
from tests.ui._site import (
    BASELINE,
    CHROMIUM,
    PLANTED,
    PLANTED_GENERATOR,
    PRIVATE,
    REPRO,
    VIEWPORT,
    OpenPage,
    Site,
    Watch,
    browser_unavailable,
    login,
    train,
)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A real server with a tokens file, filled by real Vaults over HTTP."""
    home = tmp_path_factory.mktemp("ui-server")
    tokens = TokenFile(home / "tokens.json")
    _record, admin = tokens.create("admin", "*", note="browser tests: admin")
    _record, alice = tokens.create("read", "alice", note="browser tests: alice only")
    server = ServerProcess(home, home / "server.db", "--tokens", str(tokens.path)).start()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RNGVAULT_HOME", str(tmp_path_factory.mktemp("ui-client")))
            for name in ("RNGVAULT_SPOOL", "RNGVAULT_STORE", "RNGVAULT_URL", "RNGVAULT_TOKEN"):
                env.delenv(name, raising=False)
            for run, planted, hostile in ((BASELINE, False, True), (REPRO, True, False)):
                vault = rngvault.Vault(
                    server.url, run=run, token=admin, on_error="raise", track_globals=False
                )
                train(vault, planted=planted, hostile_tag=hostile)
            bob = rngvault.Vault(
                server.url, run=PRIVATE, token=admin, on_error="raise", track_globals=False
            )
            bob.track(np.random.default_rng(99), "secret-sampler")
            bob.snapshot("epoch-1", step=1, tags=["bob-only"])
            bob.close()
            a = rngvault.fetch(BASELINE, PLANTED, url=server.url, token=admin)
            b = rngvault.fetch(REPRO, PLANTED, url=server.url, token=admin)
        yield Site(server.url, admin, alice, rngvault.diff(a, b)[PLANTED_GENERATOR])
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, one for the session."""
    reason = browser_unavailable()
    if reason is not None:
        if os.environ.get("RNGVAULT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RNGVAULT_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``$RNGVAULT_TEST_ARTIFACTS/ui``, else pytest's temp dir."""
    root = os.environ.get("RNGVAULT_TEST_ARTIFACTS")
    folder = Path(root) / "ui" if root else tmp_path_factory.getbasetemp() / "ui-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def admin_state(browser: Any, site: Site) -> dict[str, Any]:
    """The admin's signed-in browser state (its cookie), signed in once through the form."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        login(page, site.url, site.admin)
        state: dict[str, Any] = context.storage_state()
        return state
    finally:
        context.close()


@pytest.fixture
def open_page(
    browser: Any, site: Site, admin_state: dict[str, Any], artifacts: Path, request: Any
) -> Iterator[OpenPage]:
    """``open_page(signed_in=True, javascript=True)``: a new page in a context of its own,
    watched (see Watch), with the admin's cookie unless ``signed_in=False``. At teardown each
    page is screenshotted into ``artifacts`` and the test fails on any problem seen."""
    opened: list[tuple[Any, Any, Watch]] = []

    def open_one(*, signed_in: bool = True, javascript: bool = True) -> tuple[Any, Watch]:
        context = browser.new_context(
            viewport=VIEWPORT,
            java_script_enabled=javascript,
            storage_state=admin_state if signed_in else None,
        )
        context.set_default_timeout(10_000)
        watch = Watch(site.url)
        page = context.new_page()
        watch.attach(context, page)
        opened.append((context, page, watch))
        return page, watch

    yield open_one
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    problems = []
    for i, (context, page, watch) in enumerate(opened):
        try:
            if page.url.startswith(site.url):
                page.screenshot(path=str(artifacts / f"{stem}-{i}.png"), full_page=True)
        finally:
            context.close()
        problems += watch.problems
    assert not problems, "problems in the browser:\n" + "\n".join(problems)


@pytest.fixture
def page(open_page: OpenPage) -> Any:
    """A watched page signed in as the admin."""
    return open_page()[0]
