"""The seed-sensitivity page /ui/seeds on a real server (SQLite file, tokens): runs with
records (seed and config) and metrics, one planted outlier seed. The page marks the outlier
and no other seed, its numbers are those ``analyze`` gives for the same data (computed here
from the values written, not read back), groups split by config are apart with the keys that
split them, what clients wrote is escaped, bad input is a 400 page, and a token limited to one
namespace sees nothing of another."""

from __future__ import annotations

import html
import re
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest

import rngvault
from rngvault._seeds import Observation, SeedReport, analyze
from rngvault.server.tokens import TokenFile
from rngvault.server.ui import charts
from tests._live import ServerProcess
from tests.server.test_ui import Page, check_page

MSGPACK = {"Content-Type": "application/msgpack"}
HOSTILE_METRIC = '"><img src=x onerror=alert(3)>'
HOSTILE_NOTE = "</title></svg><script>alert(4)</script>"
PLANTED = 7
SWEEP = range(10)
WIDE = range(5)
BASE = {"lr": 0.1, "model": {"depth": 4}}
DEEP = {"lr": 0.1, "model": {"depth": 8}}


def accuracy(seed: int, depth: int) -> float:
    """A metric moved by the seed alone; seed PLANTED of the depth-4 sweep is far off."""
    if depth == 4 and seed == PLANTED:
        return 61.5
    return round(90.0 + depth / 10 + float(np.random.default_rng(seed).normal(0.0, 0.3)), 4)


def runs() -> list[tuple[str, int | None, dict[str, Any], dict[str, Any] | None]]:
    """(run, seed, config, final metrics or None for a run that recorded none)."""
    written: list[tuple[str, int | None, dict[str, Any], dict[str, Any] | None]] = []
    for seed in SWEEP:
        metrics = {"accuracy": accuracy(seed, 4), "loss": 0.5 + seed / 100}
        written.append((f"lab/sweep-{seed}", seed, BASE, metrics))
    for seed in WIDE:
        written.append((f"lab/wide-{seed}", seed, DEEP, {"accuracy": accuracy(seed, 8)}))
    written.append(("lab/sweep-quiet", 99, BASE, None))
    written.append(("lab/unseeded", None, BASE, {"accuracy": 1.0}))
    for seed in range(3):
        hostile = {**BASE, "note": HOSTILE_NOTE}
        written.append((f"lab/odd-{seed}", seed, hostile, {HOSTILE_METRIC: float(seed)}))
    for seed in range(4):
        written.append((f"secret/hidden-{seed}", seed, BASE, {"accuracy": 42.0 + seed}))
    return written


def put_run(
    client: httpx.Client,
    run: str,
    seed: int | None,
    config: dict[str, Any],
    metrics: dict[str, Any] | None,
) -> None:
    """Two snapshots (metrics in the second) and the run's record, over the API."""
    for step, name in enumerate(("start", "final")):
        snapshot = rngvault.capture(
            {"g": np.random.default_rng(step)},
            include_globals=False,
            metadata=rngvault.Metadata(step=step, metrics=(metrics or {}) if step else {}),
        )
        client.put(
            f"/v1/runs/{run}/snapshots/{name}", content=rngvault.encode(snapshot), headers=MSGPACK
        ).raise_for_status()
    record = {"config": config, **({"seed": seed} if seed is not None else {})}
    client.put(f"/v1/runs/{run}/record", json=record).raise_for_status()


class World:
    def __init__(self, server: ServerProcess, tokens: dict[str, str]) -> None:
        self.url = server.url
        self.tokens = tokens

    @contextmanager
    def client(self, label: str) -> Iterator[httpx.Client]:
        """A client logged in to the pages with the token ``label``."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            answer = client.post("/ui/login", data={"token": self.tokens[label], "next": "/ui"})
            assert answer.status_code == 303, answer.text
            yield client


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("ui-seeds")
    file = TokenFile(home / "tokens.json")
    tokens = {
        "admin": file.create("write", "*")[1],
        "lab": file.create("read", "lab")[1],
    }
    server = ServerProcess(home, home / "seeds.db", "--tokens", str(home / "tokens.json")).start()
    try:
        auth = {"Authorization": f"Bearer {tokens['admin']}"}
        with httpx.Client(base_url=server.url, timeout=30, headers=auth) as client:
            for run, seed, config, metrics in runs():
                put_run(client, run, seed, config, metrics)
        yield World(server, tokens)
    finally:
        server.stop()


def expected(pattern: str, metric: str | None = None) -> SeedReport:
    """``analyze`` over the values this module wrote (not over what the server holds)."""
    observations = []
    for run, seed, config, metrics in runs():
        if re.fullmatch(pattern.replace("*", ".*"), run):
            missing = None if metrics else "no snapshot records metrics"
            observations.append(Observation(run, seed, config, metrics or {}, missing))
    return analyze(observations, pattern=pattern, metric=metric)


def sections(text: str) -> list[str]:
    """The HTML of each group's section, in page order."""
    return re.findall(r'<section class="seed-group".*?</section>', text, re.S)


def cells(section: str, metric: str) -> list[tuple[str, str | None]]:
    """(data-value, data-seed) of each number cell in the row of ``metric``."""
    rows = re.findall(r'<tr data-metric="([^"]*)">(.*?)</tr>', section, re.S)
    found = [body for name, body in rows if html.unescape(name) == metric]
    assert len(found) == 1, f"no row for {metric!r}"
    tds = [a for t, a in Page(found[0]).tags if t == "td"]
    return [(a.get("data-value") or "", a.get("data-seed")) for a in tds[:-1]]


def test_the_page_shows_the_outlier_seed_and_analyzes_numbers(world: World) -> None:
    want = expected("lab/sweep-*", "accuracy")
    assert [o.seed for o in want.outliers] == [PLANTED]  # the planted seed, and no other
    with world.client("lab") as client:
        answer = client.get("/ui/seeds", params={"pattern": "lab/sweep-*", "metric": "accuracy"})
    page = check_page(answer)
    (section,) = sections(answer.text)
    stats = want.groups[0].metrics[0]
    values = [accuracy(seed, 4) for seed in SWEEP]
    assert stats.mean == statistics.fmean(values) and stats.std == statistics.stdev(values)
    got = cells(section, "accuracy")
    assert [float(v) for v, _ in got] == [
        stats.count,
        stats.mean,
        stats.std,
        stats.median,
        stats.min,
        stats.max,
        stats.spread,
        stats.spread_in_std,
    ]
    assert (got[4][1], got[5][1]) == (str(stats.min_seed), str(stats.max_seed))
    assert got[4][1] == str(PLANTED)
    # the outlier: a red dot with its seed as label, in the table, and in the verdict
    dots = [a for t, a in Page(section).tags if t == "circle"]
    assert [a["data-seed"] for a in dots] == [str(s) for s in SWEEP]  # seeds in order
    assert [a["data-seed"] for a in dots if a["class"] == "dot outlier"] == [str(PLANTED)]
    assert re.findall(r'<text [^>]*class="outlier-label">([^<]*)</text>', section) == ["7"]
    assert [a["data-seed"] for a in page.having("class", "outlier-seed")] == [str(PLANTED)]
    verdict = re.search(r'<p class="verdict" data-metric="accuracy">(.*?)</p>', section, re.S)
    assert verdict and html.unescape(verdict.group(1)) == stats.verdict + "."
    title = re.search(r"<svg[^>]*>\s*<title[^>]*>(.*?)</title>", section, re.S)
    assert title and html.unescape(title.group(1)) == charts.seed_plot(stats).title
    assert "outlier (red): seed 7" in title.group(1)
    # the skipped runs: without metrics, without a seed
    skipped = {a["data-run"] for a in page.having("data-run")}
    assert skipped == {s.run for s in want.skipped} == {"lab/sweep-quiet"}


def test_the_dots_lie_where_their_values_are(world: World) -> None:
    with world.client("lab") as client:
        answer = client.get("/ui/seeds", params={"pattern": "lab/sweep-*", "metric": "accuracy"})
    check_page(answer)
    section = sections(answer.text)[0]
    dots = [a for t, a in Page(section).tags if t == "circle"]
    xs = [float(a["cx"] or 0) for a in dots]
    ys = {int(a["data-seed"] or 0): float(a["cy"] or 0) for a in dots}
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # evenly spread, in seed order
    low, high = min(map(accuracy, SWEEP, [4] * 10)), max(map(accuracy, SWEEP, [4] * 10))
    inner = charts.SEED_HEIGHT - 2 * charts.SEED_PAD
    for seed, y in ys.items():  # larger values higher up (smaller y), to the nearest 0.1
        share = (accuracy(seed, 4) - low) / (high - low)
        assert y == pytest.approx(charts.SEED_HEIGHT - charts.SEED_PAD - share * inner, abs=0.05)
    assert ys[PLANTED] == charts.SEED_HEIGHT - charts.SEED_PAD  # the lowest value at the bottom
    lines = {
        k: float(y) for y, k in re.findall(r'<line [^>]*y1="([^"]+)"[^>]*class="(\w+)"', section)
    }
    stats = expected("lab/sweep-*", "accuracy").groups[0].metrics[0]
    plot = charts.seed_plot(stats)
    assert lines == {"mean": plot.mean_y, "median": plot.median_y}
    # the mean is dragged down by the planted seed: its line lies below the median's
    assert lines["mean"] > lines["median"]


def test_groups_split_by_config_are_apart_with_the_keys_that_split_them(world: World) -> None:
    want = expected("lab/*")
    with world.client("lab") as client:
        answer = client.get("/ui/seeds", params={"pattern": "lab/*"})
    page = check_page(answer)
    found = sections(answer.text)
    assert len(found) == len(want.groups) == 3
    keys = [
        html.unescape(k) for k in re.findall(r'<code class="split-key">(.*?)</code>', answer.text)
    ]
    assert keys == list(want.split_by) == ["model.depth", "note"]
    for section, group in zip(found, want.groups, strict=True):
        seeds = [
            int(a["data-seed"] or -1)
            for t, a in Page(section).tags
            if t == "li" and "data-seed" in a
        ]
        assert seeds == list(group.runs)
        for stats in group.metrics:
            got = cells(section, stats.metric)
            assert float(got[1][0]) == stats.mean and int(got[0][0]) == stats.count
    # the depth-8 runs are not pooled with the depth-4 sweep: each group's own runs
    assert "lab/wide-0" in found[1] and "lab/wide-0" not in found[0]
    assert {a["data-run"] for a in page.having("data-run")} == {s.run for s in want.skipped}
    assert "lab/unseeded" in {s.run for s in want.skipped}


def test_what_clients_wrote_is_escaped(world: World) -> None:
    with world.client("lab") as client:
        answer = client.get("/ui/seeds", params={"pattern": "lab/odd-*"})
        metric = client.get("/ui/seeds", params={"pattern": "lab/odd-*", "metric": HOSTILE_METRIC})
    for each in (answer, metric):
        page, text = check_page(each), each.text
        assert HOSTILE_METRIC not in text and HOSTILE_NOTE not in text
        assert not any(t in ("img", "script") for t, _ in page.tags)
        shown = "".join(page.text)
        assert HOSTILE_METRIC in shown and "alert(4)" in shown
        assert "<title" in text and text.count("<svg") == text.count("</svg>") == 1


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"pattern": "lab"}, "NAMESPACE/RUN"),
        ({"pattern": "lab/x/y"}, "NAMESPACE/RUN"),
        ({"pattern": "lab/<b>"}, "NAMESPACE/RUN"),
        ({"pattern": "lab/" + "x" * 300}, "NAMESPACE/RUN"),
        ({"pattern": "lab/*", "at": "../etc"}, "invalid snapshot name"),
        ({"pattern": "lab/*", "metric": "m" * 300}, "at most 256"),
    ],
)
def test_bad_input_is_a_400_page(world: World, params: dict[str, str], says: str) -> None:
    with world.client("lab") as client:
        page = check_page(client.get("/ui/seeds", params=params), 400)
    assert says in "".join(page.text)


def test_nothing_matching_is_a_message_not_an_error(world: World) -> None:
    with world.client("lab") as client:
        answer = client.get("/ui/seeds", params={"pattern": "lab/none-*"})
        page = check_page(answer)
        assert "no run matches 'lab/none-*'" in "".join(page.text)
        empty = check_page(client.get("/ui/seeds"))  # the form alone
        assert empty.having("id", "pattern") and not sections(answer.text)


def test_a_token_for_another_namespace_sees_nothing_of_it(world: World) -> None:
    with world.client("lab") as client:
        named = client.get("/ui/seeds", params={"pattern": "secret/*"})
        check_page(named, 403)
        assert "hidden" not in named.text
        for pattern in ("*/hidden-*", "secre?/*", "[s]ecret/*"):
            answer = client.get("/ui/seeds", params={"pattern": pattern})
            check_page(answer)
            shown = answer.text.replace(pattern, "")  # the form repeats the pattern asked
            assert "hidden" not in shown and "secret" not in shown
            assert "no run matches" in shown
        every = client.get("/ui/seeds", params={"pattern": "*/*"})
        check_page(every)
        assert "secret" not in every.text and "lab/sweep-0" in every.text
    with world.client("admin") as client:
        answer = client.get("/ui/seeds", params={"pattern": "secret/*"})
        check_page(answer)
        assert "secret/hidden-3" in answer.text


def test_the_pages_need_a_login(world: World) -> None:
    with httpx.Client(base_url=world.url, timeout=30) as client:
        answer = client.get("/ui/seeds", params={"pattern": "lab/*"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login?next=%2Fui%2Fseeds%3Fpattern")


def test_the_runs_list_leads_to_the_page(world: World) -> None:
    with world.client("lab") as client:
        page = check_page(client.get("/ui", params={"namespace": "lab"}))
        (field,) = page.having("id", "seeds-pattern")
        assert field["value"] == "lab/*"
        (form,) = [a for t, a in page.tags if t == "form" and a.get("action") == "/ui/seeds"]
        assert form["method"] == "get" and page.having("name", "metric")
        everything = check_page(client.get("/ui"))
        assert everything.having("id", "seeds-pattern")[0]["value"] == ""
        # what the form sends: the page for the namespace's runs
        sent = check_page(client.get("/ui/seeds", params={"pattern": "lab/*", "metric": ""}))
        assert sent.having("class", "seed-group")


def test_at_a_snapshot_reads_that_snapshots_metrics(world: World) -> None:
    """The runs' "start" snapshots recorded no metrics: every run is skipped, saying so."""
    want = expected("lab/wide-*", "accuracy")
    assert len(want.groups) == 1
    with world.client("lab") as client:
        final = client.get("/ui/seeds", params={"pattern": "lab/wide-*", "at": "final"})
        start = client.get(
            "/ui/seeds", params={"pattern": "lab/wide-*", "metric": "accuracy", "at": "start"}
        )
    assert len(sections(final.text)) == 1
    page = check_page(start)
    assert not sections(start.text) and "No group" in "".join(page.text)
    rows = re.findall(r'<tr data-run="([^"]+)">.*?<td>(.*?)</td>', start.text, re.S)
    assert [r for r, _ in rows] == [f"lab/wide-{s}" for s in WIDE]
    assert {html.unescape(why) for _, why in rows} == {"no metric 'accuracy' in snapshot 'start'"}


def test_a_runs_page_shows_its_record_escaped(world: World) -> None:
    """The run's page lists its record: the seed, git, and the config, dotted; what a
    client wrote is text; a run without a record says so."""
    auth = {"Authorization": f"Bearer {world.tokens['admin']}"}
    with httpx.Client(base_url=world.url, timeout=30, headers=auth) as api:
        api.put(
            "/v1/runs/records/recorded/record",
            json={
                "seed": 3407,
                "git": {"commit": "a" * 40, "dirty": True},
                "command": ["train.py", "--note", HOSTILE_NOTE],
                "config": {"lr": 0.1, "model": {"depth": 4}, "note": HOSTILE_NOTE},
            },
        ).raise_for_status()
        snapshot = rngvault.capture({"g": np.random.default_rng(0)}, include_globals=False)
        api.put(
            "/v1/runs/records/unrecorded/snapshots/a",
            content=rngvault.encode(snapshot),
            headers=MSGPACK,
        ).raise_for_status()

    def record_text(client: httpx.Client, run: str) -> tuple[str, str]:
        answer = client.get(f"/ui/runs/records/{run}")
        check_page(answer)
        found = re.search(r'<section aria-labelledby="record">(.*?)</section>', answer.text, re.S)
        assert found, answer.text[:300]
        return found.group(1), re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1)))

    with world.client("admin") as client:
        raw, plain = record_text(client, "recorded")
        assert "<script>" not in raw and html.escape(HOSTILE_NOTE, quote=False) in raw
        assert "Seed 3407" in plain
        assert f"Git commit {'a' * 40} (dirty tree)" in plain
        assert "model.depth 4" in plain and "lr 0.1" in plain
        _raw, plain = record_text(client, "unrecorded")
        assert "No record" in plain
