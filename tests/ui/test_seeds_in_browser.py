"""The seed-sensitivity page in Chromium: reached from the runs list's form, its dot plot is
drawn (a box of non-zero size), the planted outlier's dot is visible, red and labelled with
its seed, and nothing on the page fails (watched as the other pages are, tests/ui/_site.py).

Its own server, filled as tests/server/test_ui_seeds.py fills one (records with seeds and
configs, final metrics, seed 7 of the depth-4 sweep planted far off)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess
from tests.server.test_ui_seeds import PLANTED, put_run, runs
from tests.ui._site import VIEWPORT, Watch, login

RED = "rgb(200, 16, 46)"  # ui.css: svg .dot.outlier


@pytest.fixture(scope="module")
def seeds_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the server's URL, a token reading namespace ``lab``)."""
    home = tmp_path_factory.mktemp("ui-seeds-browser")
    file = TokenFile(home / "tokens.json")
    admin, lab = file.create("write", "*")[1], file.create("read", "lab")[1]
    server = ServerProcess(home, home / "seeds.db", "--tokens", str(home / "tokens.json")).start()
    try:
        auth = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=server.url, timeout=30, headers=auth) as client:
            for run, seed, config, metrics in runs():
                put_run(client, run, seed, config, metrics)
        yield server.url, lab
    finally:
        server.stop()


@pytest.fixture
def watched(
    browser: Any, seeds_site: tuple[str, str], artifacts: Path
) -> Iterator[tuple[Any, str]]:
    """A page signed in with the ``lab`` token, watched; screenshotted, then checked."""
    url, token = seeds_site
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    watch = Watch(url)
    page = context.new_page()
    watch.attach(context, page)
    try:
        login(page, url, token)
        yield page, url
        page.screenshot(path=str(artifacts / "seeds-page.png"), full_page=True)
    finally:
        context.close()
    assert not watch.problems, "problems in the browser:\n" + "\n".join(watch.problems)


def test_the_runs_form_leads_to_a_drawn_plot_with_the_outlier_marked(
    watched: tuple[Any, str], artifacts: Path
) -> None:
    page, url = watched
    page.goto(f"{url}/ui?namespace=lab")
    page.screenshot(path=str(artifacts / "seeds-runs-form.png"), full_page=True)
    field = page.locator("#seeds-pattern")
    assert field.input_value() == "lab/*"
    field.fill("lab/sweep-*")
    page.locator("#seeds-metric").fill("accuracy")
    with page.expect_navigation():
        page.locator("form[action='/ui/seeds'] button[type=submit]").click()
    assert "/ui/seeds?pattern=lab%2Fsweep-" in page.url and "metric=accuracy" in page.url
    plot = page.locator("svg.seed-plot")
    assert plot.count() == 1
    box = plot.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 50
    assert plot.locator("title").first.text_content().startswith("accuracy by seed")
    dot = plot.locator(f'circle.outlier[data-seed="{PLANTED}"]')
    assert dot.count() == 1 and plot.locator("circle.outlier").count() == 1
    assert dot.is_visible()
    dot_box = dot.bounding_box()
    assert dot_box is not None and dot_box["width"] > 0 and dot_box["height"] > 0
    assert dot.evaluate("e => getComputedStyle(e).fill") == RED
    label = plot.locator("text.outlier-label")
    assert label.text_content() == str(PLANTED) and label.is_visible()
    # the label lies inside the plot, near its dot
    label_box = label.bounding_box()
    assert label_box is not None
    assert (
        box["x"] <= label_box["x"]
        and label_box["x"] + label_box["width"] <= box["x"] + box["width"]
    )
    assert (
        box["y"] <= label_box["y"]
        and label_box["y"] + label_box["height"] <= box["y"] + box["height"]
    )
    assert abs(label_box["x"] + label_box["width"] / 2 - (dot_box["x"] + dot_box["width"] / 2)) < 20
    others = plot.locator("circle.dot:not(.outlier)")
    assert others.count() == 9
    assert others.first.evaluate("e => getComputedStyle(e).fill") != RED
