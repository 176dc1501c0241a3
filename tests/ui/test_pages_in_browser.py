"""The pages under /ui, driven in Chromium against a real server filled by real Vaults.

The scenario (tests/ui/_site.py): two runs of alice, the second with one planted extra draw of
``augment`` before ``step-30``; a run of bob; a snapshot tagged ``<script>alert(1)</script>``.
Every page opened is watched for console errors, failed requests, dialogs and requests to
other origins (conftest.py's ``open_page``).
"""

from __future__ import annotations

import re
from typing import Any

from tests.ui._site import (
    BASELINE,
    HOSTILE,
    PLANTED,
    PLANTED_GENERATOR,
    PRIVATE,
    REPRO,
    SNAPSHOTS,
    OpenPage,
    Site,
    Watch,
    docs_screenshot,
    login,
)


def _link(page: Any, path: str) -> Any:
    """The first link whose target is ``path`` (absolute or not, with or without a query)."""
    return page.locator(f'a[href$="{path}"], a[href*="{path}?"]').first


def _check_layout(page: Any) -> None:
    """Every page: one <h1>, a <nav> linking to the runs list, a <main>, and a label for
    every field."""
    assert page.locator("h1").count() == 1, page.url
    assert page.locator("main").count() == 1, page.url
    assert page.locator('nav a[href$="/ui"], nav a[href*="/ui?"]').count() >= 1, page.url
    fields = page.locator("input:not([type=hidden]), select, textarea")
    for i in range(fields.count()):
        field = fields.nth(i)
        ident = field.get_attribute("id")
        labelled = bool(field.get_attribute("aria-label")) or (
            ident is not None and page.locator(f'label[for="{ident}"]').count() == 1
        )
        assert labelled, f"a field without a label on {page.url}: {field.evaluate('e => e.name')}"


def test_other_origins_are_blocked_and_reported(browser: Any, site: Site) -> None:
    """The guard every page runs under: a request to another origin is aborted and
    recorded, so a page loading an external asset cannot pass."""
    context = browser.new_context()
    try:
        page = context.new_page()
        watch = Watch(site.url)
        watch.attach(context, page)
        page.goto(f"{site.url}/healthz")
        page.set_content('<img src="https://cdn.example.com/x.png">', wait_until="load")
        page.wait_for_timeout(200)  # let the aborted request's event arrive
    finally:
        context.close()
    assert any("cdn.example.com" in p and "blocked" in p for p in watch.problems), watch.problems


def test_every_page_loads_without_errors(open_page: OpenPage, site: Site) -> None:
    """Each kind of page answers 200 with the common layout, and nothing on it fails."""
    page, _watch = open_page()
    paths = [
        "/ui",
        "/ui?namespace=alice",
        f"/ui/runs/{BASELINE}",
        f"/ui/runs/{BASELINE}/{PLANTED}",
        f"/ui/runs/{BASELINE}/{PLANTED}?rank=0",
        f"/ui/diff?a={BASELINE}/{PLANTED}&b={REPRO}/{PLANTED}",
        f"/ui/divergence?run={REPRO}&reference={BASELINE}",
        "/ui/login",
    ]
    for path in paths:
        response = page.goto(site.url + path)
        assert response is not None and response.status == 200, path
        _check_layout(page)
    response = page.goto(site.url + "/")
    assert response is not None and response.status == 200
    assert page.url.rstrip("/").endswith("/ui"), page.url


def test_links_lead_from_the_runs_list_to_a_diff(open_page: OpenPage, site: Site) -> None:
    """runs list -> run -> snapshot -> diff, by clicking links and submitting forms only."""
    page, _watch = open_page()
    page.goto(site.url + "/ui")
    for run in (BASELINE, REPRO, PRIVATE):
        assert _link(page, f"/ui/runs/{run}").count() == 1, f"no link to {run}"
    docs_screenshot(page, "ui-runs.png")

    _link(page, f"/ui/runs/{BASELINE}").click()
    page.wait_for_url(re.compile(rf"/ui/runs/{BASELINE}(\?|$)"))
    for name in SNAPSHOTS:
        assert _link(page, f"/ui/runs/{BASELINE}/{name}").count() == 1, f"no link to {name}"
    charts = page.locator("main svg")
    assert charts.count() >= 1
    assert charts.first.locator("title").count() == 1

    _link(page, f"/ui/runs/{BASELINE}/{PLANTED}").click()
    page.wait_for_url(re.compile(rf"/ui/runs/{BASELINE}/{PLANTED}(\?|$)"))
    assert PLANTED in page.locator("h1").inner_text()
    assert page.locator(f'tr[data-generator="{PLANTED_GENERATOR}"]').count() == 1

    page.locator('nav a[href$="/ui/diff"]').first.click()
    page.wait_for_url(re.compile(r"/ui/diff$"))
    page.locator("input[name=a]").fill(f"{BASELINE}/{PLANTED}")
    page.locator("input[name=b]").fill(f"{REPRO}/{PLANTED}")
    with page.expect_navigation():
        page.locator("form:has(input[name=a]) button[type=submit]").click()
    assert page.locator(f'tr[data-generator="{PLANTED_GENERATOR}"]').count() == 1


def test_every_link_answers(open_page: OpenPage, site: Site) -> None:
    """Following every same-origin link from the runs list (pages opened in the browser,
    downloads fetched with its cookie) finds no broken one."""
    page, _watch = open_page()
    queue, seen, downloads = [site.url + "/ui"], {site.url + "/ui"}, 0
    while queue:
        page.goto(queue.pop(0))
        links = page.eval_on_selector_all(
            "a[href]", "links => links.map(a => [a.href, a.hasAttribute('download')])"
        )
        for url, download in links:
            url = url.split("#")[0]
            if not url.startswith(site.url + "/") or url in seen:
                continue
            seen.add(url)
            if download:
                response = page.request.get(url)
                assert response.status == 200, (url, response.status)
                assert len(response.body()) > 0, url
                downloads += 1
            else:
                queue.append(url)
        assert len(seen) < 400, "the crawl does not end: links keep making new URLs"
    assert downloads >= 2 * len(SNAPSHOTS)  # msgpack and JSON of each snapshot at least
    assert any(f"/ui/runs/{REPRO}/{PLANTED}" in url for url in seen)


def test_the_diff_shows_the_planted_distance(open_page: OpenPage, site: Site) -> None:
    """The planted generator's row says it advanced by the distance the library finds (one
    draw); the untouched generator's row says unchanged."""
    expected = site.planted
    assert (expected.status, expected.distance) == ("advanced", 1)  # the planted draw
    page, _watch = open_page()
    page.goto(f"{site.url}/ui/diff?a={BASELINE}/{PLANTED}&b={REPRO}/{PLANTED}")
    row = page.locator(f'tr[data-generator="{PLANTED_GENERATOR}"]')
    assert row.count() == 1
    text = row.inner_text()
    assert expected.status in text
    assert f"{expected.distance} {expected.unit}" in text, text
    other = page.locator('tr[data-generator="dropout"]').inner_text()
    assert "unchanged" in other
    docs_screenshot(page, "ui-diff.png")

    page.goto(f"{site.url}/ui/diff?a={BASELINE}/step-20&b={REPRO}/step-20")
    row = page.locator(f'tr[data-generator="{PLANTED_GENERATOR}"]')
    assert "unchanged" in row.inner_text()  # before the planted draw, nothing moved


def test_the_divergence_page_marks_the_planted_snapshot(open_page: OpenPage, site: Site) -> None:
    """Both timelines mark step-30, the first snapshot after the planted draw, and nothing
    else."""
    page, _watch = open_page()
    page.goto(f"{site.url}/ui/divergence?run={REPRO}&reference={BASELINE}")
    marked = page.locator('.diverged[aria-current="true"]')
    assert marked.count() == 2
    for i in range(2):
        assert PLANTED in marked.nth(i).inner_text()
    assert page.locator(".diverged").count() == 2
    assert page.locator('[aria-current="true"]').count() == 2


def test_a_namespace_limited_login_sees_only_its_namespace(open_page: OpenPage, site: Site) -> None:
    """Signed in through the form with a token for alice only: bob's run is not listed, its
    page and snapshot are refused, and alice's runs are there."""
    page, watch = open_page(signed_in=False)
    login(page, site.url, site.alice)
    page.goto(site.url + "/ui")
    assert _link(page, f"/ui/runs/{BASELINE}").count() == 1
    assert _link(page, f"/ui/runs/{PRIVATE}").count() == 0
    assert "bob" not in page.locator("main").inner_text()

    with watch.allowing(403, 404):
        for path in (f"/ui/runs/{PRIVATE}", f"/ui/runs/{PRIVATE}/epoch-1", "/ui?namespace=bob"):
            response = page.goto(site.url + path)
            assert response is not None
            body = page.locator("body").inner_text()
            assert "secret-sampler" not in body and "bob-only" not in body, path
            if path.startswith("/ui/runs/"):
                assert response.status in (403, 404), (path, response.status)
        response = page.goto(f"{site.url}/ui/diff?a={BASELINE}/{PLANTED}&b={PRIVATE}/epoch-1")
        assert response is not None and response.status in (403, 404)
        assert "secret-sampler" not in page.locator("body").inner_text()

    page.locator('form[action="/ui/logout"] button[type=submit]').click()
    page.wait_for_url(re.compile(r"/ui/login"))
    page.goto(site.url + "/ui")  # signed out: the form again, no runs
    assert page.locator("input[name=token]").count() == 1
    assert _link(page, f"/ui/runs/{BASELINE}").count() == 0


def test_signed_out_pages_ask_for_a_token(open_page: OpenPage, site: Site) -> None:
    """Without the cookie a server with tokens shows no run: it asks to sign in."""
    page, watch = open_page(signed_in=False)
    with watch.allowing(401, 403):
        page.goto(site.url + "/ui")
    assert page.locator("input[name=token]").count() == 1 or "/ui/login" in page.url
    assert "baseline" not in page.locator("body").inner_text()


def test_a_hostile_tag_is_shown_as_text(open_page: OpenPage, site: Site) -> None:
    """A tag holding a <script> element is displayed verbatim and never runs (a dialog
    would fail the test through the watch)."""
    page, _watch = open_page()
    for path in (f"/ui/runs/{BASELINE}", f"/ui/runs/{BASELINE}/{SNAPSHOTS[-1]}"):
        page.goto(site.url + path)
        assert HOSTILE in page.locator("main").inner_text(), path
        assert page.locator("script").count() == 0, path  # the pages have no script at all


def test_usable_without_javascript(open_page: OpenPage, site: Site) -> None:
    """With JavaScript off, signing in, the runs list and the diff all work."""
    page, _watch = open_page(signed_in=False, javascript=False)
    login(page, site.url, site.admin)
    page.goto(site.url + "/ui")
    assert _link(page, f"/ui/runs/{REPRO}").count() == 1
    page.goto(f"{site.url}/ui/diff?a={BASELINE}/{PLANTED}&b={REPRO}/{PLANTED}")
    row = page.locator(f'tr[data-generator="{PLANTED_GENERATOR}"]')
    assert site.planted.status in row.inner_text()
    page.goto(f"{site.url}/ui/divergence?run={REPRO}&reference={BASELINE}")
    assert page.locator('.diverged[aria-current="true"]').count() == 2
