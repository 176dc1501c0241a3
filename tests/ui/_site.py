"""The browser tests' scenario and helpers (their fixtures are in conftest.py)."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import rngvault

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
HOW_TO = (
    "install Debian's Chromium (apt-get install chromium; scripts/test does this when run "
    "as root) and Playwright for Python (pip install 'rngvault[test]')"
)

BASELINE = "alice/baseline"
REPRO = "alice/repro"
PRIVATE = "bob/private"
SNAPSHOTS = ("step-10", "step-20", "step-30", "step-40", "step-50")
PLANTED = "step-30"  # the repro draws once more from PLANTED_GENERATOR just before this one
PLANTED_GENERATOR = "augment"
HOSTILE = "<script>alert(1)</script>"
VIEWPORT = {"width": 1100, "height": 700}
DOCS_VIEWPORT = {"width": 1220, "height": 520}  # the pictures in docs/ui.md


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"Playwright for Python is not installed: {HOW_TO}"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM}: {HOW_TO}"
    return None


@dataclass(frozen=True)
class Site:
    """The session's server and what was pushed to it.

    Attributes:
        url: the server's base URL.
        admin: a token allowed everything.
        alice: a token that may only read namespace ``alice``.
        planted: the library's diff of ``step-30`` of the baseline and the repro, for the
            planted generator (what the diff page must show).
    """

    url: str
    admin: str
    alice: str
    planted: rngvault.GeneratorDiff


def train(vault: rngvault.Vault, *, planted: bool, hostile_tag: bool) -> None:
    """Five snapshots of a toy loop drawing from two generators; ``planted`` adds one extra
    draw of ``augment`` just before PLANTED."""
    augment = vault.track(np.random.default_rng(2024), PLANTED_GENERATOR)
    dropout = vault.track(random.Random(7), "dropout")
    for i, name in enumerate(SNAPSHOTS, start=1):
        augment.random(8)
        dropout.random()
        if planted and name == PLANTED:
            augment.random()  # the planted extra draw
        tags = ["baseline" if not planted else "repro"]
        if hostile_tag and name == SNAPSHOTS[-1]:
            tags.append(HOSTILE)
        vault.snapshot(
            name,
            step=10 * i,
            epoch=i,
            metrics={"loss": round(2.0 / i, 4), "accuracy": round(0.5 + 0.08 * i, 4)},
            tags=tags,
        )
    vault.close()


@dataclass
class Watch:
    """What went wrong on a page: console errors, page errors, failed or refused requests,
    dialogs and blocked requests to other origins."""

    origin: str
    problems: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    @contextmanager
    def allowing(self, *statuses: int) -> Iterator[None]:
        """Within the block, responses with these statuses (and the console errors Chromium
        logs for them) are expected, not problems."""
        self.allowed_statuses.update(statuses)
        try:
            yield
        finally:
            self.allowed_statuses.difference_update(statuses)

    def console(self, message: Any) -> None:
        if message.type != "error":
            return
        status = re.search(r"status of (\d{3})", message.text)
        if status and int(status[1]) in self.allowed_statuses:
            return
        self.problems.append(f"console error: {message.text} at {message.location}")

    def response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.allowed_statuses:
            self.problems.append(f"HTTP {response.status} for {response.url}")

    def request_failed(self, request: Any) -> None:
        # ERR_ABORTED: a request the browser itself cancelled because the page navigated
        # away (a favicon still loading when a test moves on), not a failure of the server.
        if request.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def dialog(self, dialog: Any) -> None:
        self.problems.append(f"a {dialog.type} dialog opened: {dialog.message!r}")
        dialog.dismiss()

    def route(self, route: Any) -> None:
        url = route.request.url
        if url == self.origin or url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.problems.append(f"request to another origin blocked: {url}")
            route.abort("blockedbyclient")

    def attach(self, context: Any, page: Any) -> None:
        """Block other origins in ``context``; record ``page``'s problems."""
        context.route("**/*", self.route)
        page.on("console", self.console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", self.request_failed)
        page.on("response", self.response)
        page.on("dialog", self.dialog)


OpenPage = Callable[..., tuple[Any, "Watch"]]


def login(page: Any, url: str, token: str) -> None:
    """Sign in through the login form, as a person would."""
    page.goto(f"{url}/ui/login")
    page.locator("input[name=token]").fill(token)
    with page.expect_navigation():
        page.locator("form:has(input[name=token]) button[type=submit]").click()
    assert "/ui/login" not in page.url, f"the login form did not accept the token: {page.url}"


def docs_screenshot(page: Any, name: str) -> None:
    """With ``RNGVAULT_UPDATE_SCREENSHOTS=1``, save the visible part of ``page`` as
    docs/``name`` (the pictures docs/ui.md shows); otherwise nothing."""
    if os.environ.get("RNGVAULT_UPDATE_SCREENSHOTS") == "1":
        page.set_viewport_size(DOCS_VIEWPORT)
        page.screenshot(path=str(DOCS / name), full_page=True)
        page.set_viewport_size(VIEWPORT)
