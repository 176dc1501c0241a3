"""The pages under /ui, over HTTP against a real server with tokens: each page's content,
escaping of what clients sent, paging, namespace-limited logins, the cookie's flags, the diff
of a planted extra draw and the divergence it causes, and HTML errors for bad input."""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest

import rngvault
from rngvault import Vault
from rngvault.server.app import create_app
from rngvault.server.settings import Settings
from rngvault.server.tokens import TokenFile
from rngvault.server.ui import routes
from tests._live import ServerProcess
from tests.server.conftest import make_body

HOSTILE_TAG = "<script>alert(1)</script>"
HOSTILE_KEY = '"><img src=x onerror=alert(2)>'
PLANTED = "s2"  # the snapshot before which run "repro" draws one extra raw output
LONG = routes.SNAPSHOTS_PAGE + 30
EXTRA_RUNS = routes.RUNS_PAGE + 5
MSGPACK = {"Content-Type": "application/msgpack"}


class World:
    """A server with runs pushed by real Vaults, and tokens by label."""

    def __init__(self, server: ServerProcess, tokens: dict[str, str]) -> None:
        self.server = server
        self.url = server.url
        self.tokens = tokens

    @contextmanager
    def client(self, label: str | None = None) -> Iterator[httpx.Client]:
        """A client logged in with the token ``label`` (none: not logged in)."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            if label is not None:
                answer = client.post("/ui/login", data={"token": self.tokens[label], "next": "/ui"})
                assert answer.status_code == 303, answer.text
            yield client


def push(url: str, token: str, run: str, *, extra_draw: bool, hostile: bool = False) -> None:
    """Five snapshots of two generators, drawn from between snapshots; with ``extra_draw``
    one more raw output of ``moving`` before snapshot PLANTED."""
    moving = np.random.default_rng(7)
    words = random.Random(3)
    with Vault(url, run=run, token=token, track_globals=False, on_error="raise") as vault:
        vault.track(moving, "moving")
        vault.track(words, "words")
        for step in range(5):
            name = f"s{step}"
            if extra_draw and name == PLANTED:
                moving.bit_generator.random_raw()
            metrics: dict[str, float] = {"loss": 1.0 / (step + 1)}
            if hostile:
                metrics[HOSTILE_KEY] = float(step)
            vault.snapshot(
                name,
                step=step * 10,
                epoch=step // 2,
                metrics=metrics,
                tags=[HOSTILE_TAG] if hostile else ["plain"],
            )
            moving.random(3)
            words.random()
        vault.flush()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("ui")
    file = TokenFile(home / "tokens.json")
    tokens = {
        "admin": file.create("admin", "*")[1],
        "team": file.create("read", "team-a")[1],
        "writer": file.create("write", "team-a")[1],
    }
    server = ServerProcess(home, home / "ui.db", "--tokens", str(home / "tokens.json")).start()
    try:
        admin = tokens["admin"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the planted divergence is reported by design
            push(server.url, admin, "team-a/base", extra_draw=False, hostile=True)
            push(server.url, admin, "team-a/repro", extra_draw=True)
            push(server.url, admin, "secret-ns/hidden", extra_draw=False)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            auth = {"Authorization": f"Bearer {admin}", **MSGPACK}
            for i in range(LONG):
                client.put(
                    f"/v1/runs/team-a/long/snapshots/n{i:04d}", content=make_body(i), headers=auth
                ).raise_for_status()
            for i in range(EXTRA_RUNS):
                client.put(
                    f"/v1/runs/many/r{i:03d}/snapshots/only", content=make_body(i), headers=auth
                ).raise_for_status()
        yield World(server, tokens)
    finally:
        server.stop()


class Page(HTMLParser):
    """What a test reads from a page: headings, landmarks, the text of marked rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    def having(self, attribute: str, value: str | None = None) -> list[dict[str, str | None]]:
        return [
            a for _, a in self.tags if attribute in a and (value is None or a[attribute] == value)
        ]


def check_page(answer: httpx.Response, status: int = 200) -> Page:
    """The answer is an HTML page of ``status`` with one h1, a nav back to the runs, a main."""
    assert answer.status_code == status, answer.text[:500]
    assert answer.headers["content-type"].startswith("text/html")
    page = Page(answer.text)
    assert page.count("h1") == 1 and page.count("main") == 1 and page.count("nav") >= 1
    assert any(a.get("href") == "/ui" for _, a in page.tags if _ == "a")
    assert "script" not in {t for t, _ in page.tags}
    return page


def row(text: str, attribute: str, value: str) -> str:
    """The text of the table row whose ``attribute`` is ``value``."""
    match = re.search(rf'<tr {attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', text, re.S)
    assert match, f"no row {attribute}={value!r}"
    return re.sub(r"<[^>]+>", " ", match.group(1))


def test_root_redirects_to_the_pages(world: World) -> None:
    answer = httpx.get(world.url + "/", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/ui"


def test_pages_need_a_login_and_the_login_form_is_labelled(world: World) -> None:
    with world.client() as client:
        answer = client.get("/ui/runs/team-a/base?x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/login?next=%2Fui%2Fruns%2Fteam-a%2Fbase%3Fx%3D1"
        page = check_page(client.get(answer.headers["location"]))
        assert page.having("for", "token") and page.having("id", "token")
        assert page.having("name", "next")[0]["value"] == "/ui/runs/team-a/base?x=1"


def test_login_sets_an_httponly_samesite_strict_cookie_honoured_only_by_the_pages(
    world: World,
) -> None:
    with httpx.Client(base_url=world.url, timeout=30) as client:
        answer = client.post(
            "/ui/login", data={"token": world.tokens["writer"], "next": "/ui/runs/team-a/base"}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/runs/team-a/base"
        cookie = answer.headers["set-cookie"]
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path"} <= flags and "secure" not in flags  # plain http here
        assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
        check_page(client.get("/ui/runs/team-a/base"))
        # the API reads only the Authorization header: the cookie authorises no call, no write
        cookie_only = {"Cookie": f"rngvault_token={world.tokens['writer']}"}
        assert httpx.get(world.url + "/v1/runs", headers=cookie_only).status_code == 401
        put = httpx.put(
            world.url + "/v1/runs/team-a/x/snapshots/y",
            content=make_body(1),
            headers={**cookie_only, **MSGPACK},
        )
        assert put.status_code == 401
        assert httpx.get(world.url + "/ui", headers=cookie_only).status_code == 200
        out = client.post("/ui/logout")
        assert out.status_code == 303 and 'rngvault_token=""' in out.headers["set-cookie"]
        assert client.get("/ui").status_code == 303


def test_an_invalid_token_shows_the_form_again_with_an_error(world: World) -> None:
    with httpx.Client(base_url=world.url, timeout=30) as client:
        for token in ("nonsense", "rv_000000000000_" + "x" * 43, "", "\x00" * 5):
            answer = client.post("/ui/login", data={"token": token})
            page = check_page(answer, 401)
            assert page.having("role", "alert") and "set-cookie" not in answer.headers
        garbage = client.post(
            "/ui/login",
            content=b"\xff\xfe",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        check_page(garbage, 401)


def test_a_login_posted_from_another_site_is_refused(world: World) -> None:
    with httpx.Client(base_url=world.url, timeout=30) as client:
        for header in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Referer": "http://evil.example/x"},
        ):
            answer = client.post("/ui/login", data={"token": world.tokens["admin"]}, headers=header)
            check_page(answer, 403)
            assert "set-cookie" not in answer.headers
        same = client.post(
            "/ui/login",
            data={"token": world.tokens["admin"]},
            headers={"Origin": world.url},
        )
        assert same.status_code == 303 and "set-cookie" in same.headers


def test_the_runs_list_shows_counts_ranks_and_pages(world: World) -> None:
    with world.client("admin") as client:
        first = client.get("/ui")
        page = check_page(first)
        listed = [a["data-run"] for a in page.having("data-run")]
        assert len(listed) == routes.RUNS_PAGE
        next_links = [a["href"] for a in page.having("rel", "next")]
        assert len(next_links) == 1
        second = client.get(next_links[0])
        rest = [a["data-run"] for a in check_page(second).having("data-run")]
        assert not set(rest) & set(listed)
        assert len(listed) + len(rest) == EXTRA_RUNS + 4
        filtered = check_page(client.get("/ui", params={"namespace": "team-a"}))
        assert sorted(a["data-run"] for a in filtered.having("data-run")) == [
            "team-a/base",
            "team-a/long",
            "team-a/repro",
        ]
        long = client.get("/ui", params={"namespace": "team-a"}).text
        assert row(long, "data-run", "team-a/long").split()[:3] == ["long", str(LONG), "0"]


def test_a_namespace_token_sees_only_its_namespace(world: World) -> None:
    with world.client("team") as client:
        runs = client.get("/ui")
        assert sorted(a["data-run"] for a in check_page(runs).having("data-run")) == [
            "team-a/base",
            "team-a/long",
            "team-a/repro",
        ]
        assert "secret-ns" not in runs.text and "many" not in runs.text
        for url in (
            "/ui/runs/secret-ns/hidden",
            "/ui/runs/secret-ns/hidden/s0",
            "/ui/runs/secret-ns/hidden/s0/snapshot.msgpack",
            "/ui/runs/secret-ns/nothing-here",
            "/ui?namespace=secret-ns",
            "/ui/diff?a=team-a/base/s0&b=secret-ns/hidden/s0",
            "/ui/divergence?run=team-a/base&reference=secret-ns/hidden",
        ):
            answer = client.get(url)
            check_page(answer, 403)
            alert = re.search(r'role="alert">(.*?)</p>', answer.text, re.S)
            assert alert is not None
            # names the namespace asked for, never the token's own patterns
            assert re.sub(r"<[^>]+>", "", alert.group(1)) == (
                "403 this token may not read namespace &#39;secret-ns&#39;"
            )


def test_what_clients_sent_is_shown_escaped(world: World) -> None:
    with world.client("admin") as client:
        for url in ("/ui/runs/team-a/base", "/ui/runs/team-a/base/s1"):
            answer = client.get(url)
            page = check_page(answer)
            assert HOSTILE_TAG not in answer.text and HOSTILE_KEY not in answer.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
            assert HOSTILE_TAG in "".join(page.text) and HOSTILE_KEY in "".join(page.text)
            assert not any(t == "img" for t, _ in page.tags)
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")


def test_the_run_page_shows_the_timeline_charts_and_links(world: World) -> None:
    with world.client("admin") as client:
        answer = client.get("/ui/runs/team-a/base")
        page = check_page(answer)
        assert [a["data-snapshot"] for a in page.having("data-snapshot")] == [
            f"s{i}" for i in range(5)
        ]
        assert row(answer.text, "data-snapshot", "s3").split()[:3] == ["s3", "30", "1"]
        svgs = re.findall(r"<svg.*?</svg>", answer.text, re.S)
        assert len(svgs) == 2 and all("<title" in svg for svg in svgs)
        assert "loss by step: 5 values from 0.2 to 1" in answer.text
        assert page.having("href", "/ui/runs/team-a/base/s4")
        assert page.having("href", "/ui/diff?a=team-a%2Fbase%2Fs0&b=team-a%2Fbase%2Fs1")
        assert page.having("for", "compare-a") and page.having("for", "reference")


def test_a_long_run_pages_through_its_snapshots(world: World) -> None:
    with world.client("admin") as client:
        first = check_page(client.get("/ui/runs/team-a/long"))
        names = [a["data-snapshot"] for a in first.having("data-snapshot")]
        assert names == [f"n{i:04d}" for i in range(routes.SNAPSHOTS_PAGE)]
        second = check_page(client.get(first.having("rel", "next")[0]["href"]))
        more = [a["data-snapshot"] for a in second.having("data-snapshot")]
        assert more == [f"n{i:04d}" for i in range(routes.SNAPSHOTS_PAGE, LONG)]
        assert not second.having("rel", "next")


def test_the_snapshot_page_shows_generators_ref_ranks_and_downloads(world: World) -> None:
    with world.client("team") as client:
        answer = client.get("/ui/runs/team-a/base/s2")
        page = check_page(answer)
        stored = client.get("/ui/runs/team-a/base/s2/snapshot.msgpack?rank=0")
        assert stored.status_code == 200 and stored.headers["content-type"] == "application/msgpack"
        snapshot = rngvault.decode(stored.content)
        for name, state in snapshot.states.items():
            text = row(answer.text, "data-generator", name)
            assert state.family in text and state.describe() in text.replace("&#39;", "'")
        ref = page.having("id", "ref")[0]["value"]
        assert ref == f"team-a/base/s2@{snapshot.digest}"
        assert rngvault.SnapshotRef.parse(ref).digest == snapshot.digest
        as_json = client.get("/ui/runs/team-a/base/s2/snapshot.json")
        assert as_json.json()["digest"] == snapshot.digest
        assert "Determinism flags" in answer.text and page.having("for", "rank")


def test_the_diff_shows_the_planted_extra_draw(world: World) -> None:
    with world.client("team") as client:
        answer = client.get("/ui/diff", params={"a": "team-a/base/s2", "b": "team-a/repro/s2"})
        check_page(answer)
        moving = row(answer.text, "data-generator", "moving")
        assert "advanced" in moving and "1 raw 64-bit outputs" in moving
        assert "unchanged" in row(answer.text, "data-generator", "words")
        same = client.get("/ui/diff", params={"a": "team-a/base/s1", "b": "team-a/repro/s1"})
        assert "unchanged" in row(same.text, "data-generator", "moving")


def test_the_divergence_page_marks_the_planted_snapshot_in_both_timelines(world: World) -> None:
    with world.client("team") as client:
        answer = client.get(
            "/ui/divergence", params={"run": "team-a/repro", "reference": "team-a/base"}
        )
        page = check_page(answer)
        marked = [a for a in page.having("class", "diverged")]
        assert [a["data-snapshot"] for a in marked] == [PLANTED, PLANTED]
        assert all(a["aria-current"] == "true" for a in marked)
        assert "1 raw 64-bit outputs ahead of" in answer.text
        none = check_page(
            client.get("/ui/divergence", params={"run": "team-a/base", "reference": "team-a/base"})
        )
        assert not none.having("class", "diverged")


@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        ("/ui/runs/team-a/no-such-run", 404, "no-such-run"),
        ("/ui/runs/team-a/base/nope", 404, "nope"),
        ("/ui/runs/team-a/base/s0?rank=7", 404, ""),
        ("/ui/runs/team-a/base/s0?rank=-1", 400, "rank"),
        ("/ui/runs/team-a/base/s0?rank=x", 400, "rank"),
        ("/ui/runs/team-a/base?cursor=garbage", 400, "cursor"),
        ("/ui?cursor=%00%01", 400, "cursor"),
        ("/ui/runs/team-a/.bad", 400, "name"),
        ("/ui?namespace=..", 400, "namespace"),
        ("/ui/diff?a=team-a/base/s0&b=team-a/base/zzz", 404, "snapshot B"),
        ("/ui/diff?a=team-a/base&b=team-a/base/s0", 400, "NAMESPACE/RUN/NAME"),
        ("/ui/diff?a=team-a/base/s0", 400, "b="),
        ("/ui/divergence?run=team-a/base&reference=team-a/nothing", 404, "nothing"),
        ("/ui/runs/team-a/base/s0/snapshot.exe", 404, "snapshot.json"),
        ("/ui/static/..%2Froutes.py", 404, ""),
        ("/ui/static/..%2F..%2Fapp.py", 404, ""),
        ("/ui/runs/team-a/base/s0?rank=" + "1" * 5000, 400, "rank"),
        ("/ui/diff?a=team-a/base/s0&b=team-a/base/s1&rank=" + "9" * 5000, 400, "rank"),
        # crafted cursors: a number no query can take, text that is not UTF-8
        ("/ui/runs/team-a/base?cursor=Wzk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5XQ", 400, "cursor"),
        ("/ui?cursor=WyJcdWQ4MDAiLCJ4Il0", 400, "cursor"),
    ],
)
def test_bad_input_gets_an_html_error_page(world: World, url: str, status: int, says: str) -> None:
    with world.client("admin") as client:
        answer = client.get(url)
        if url.startswith("/ui/static"):
            assert answer.status_code == status
            return
        page = check_page(answer, status)
        assert says in "".join(page.text)


def test_what_a_writer_sent_at_the_edges_still_renders(world: World) -> None:
    """Times no calendar holds, metrics at the ends of float64, a world of four ranks with
    only rank 0 stored: the run, snapshot and diff pages render (no 500), the charts hold
    no NaN, and the rank links lead only to stored ranks."""
    admin = {"Authorization": f"Bearer {world.tokens['admin']}", **MSGPACK}
    edges = [(1e300, 1e308), (float("nan"), -1e308), (-1e20, float(2**63 - 1))]
    with httpx.Client(base_url=world.url, timeout=30) as client:
        for i, (created, value) in enumerate(edges):
            snapshot = rngvault.capture(
                {"g": np.random.default_rng(i)},
                include_globals=False,
                metadata=rngvault.Metadata(step=i, metrics={"big": value}, rank=0, world_size=4),
            )._with(created=created)
            client.put(
                f"/v1/runs/team-a/edges/snapshots/e{i}",
                content=rngvault.encode(snapshot),
                headers=admin,
            ).raise_for_status()
    with world.client("admin") as client:
        run = client.get("/ui/runs/team-a/edges")
        check_page(run)
        assert "nan" not in re.findall(r'points="([^"]*)"', run.text)[0]
        title = re.findall(r"<title[^>]*>([^<]*big[^<]*)</title>", run.text)[0]
        assert "-1e+308 to 1e+308" in title and not re.search(r"\d{16}", title)
        page = check_page(client.get("/ui/runs/team-a/edges/e0"))
        assert "not a date" in "".join(page.text)
        links = [a["href"] for a in page.having("href") if "?rank=" in (a["href"] or "")]
        assert links and all(link.endswith("?rank=0") for link in links)
        check_page(client.get("/ui/diff?a=team-a/edges/e0&b=team-a/edges/e1"))


def test_the_stylesheet_and_icon_are_served_from_the_package(world: World) -> None:
    for name, kind in routes.STATIC.items():
        answer = httpx.get(f"{world.url}/ui/static/{name}")
        assert answer.status_code == 200 and answer.headers["content-type"] == kind
        assert answer.content == (Path(routes.__file__).parent / "static" / name).read_bytes()
    css = httpx.get(f"{world.url}/ui/static/ui.css").text
    assert "url(" not in css and "@import" not in css  # nothing loaded from elsewhere


def test_an_open_server_on_loopback_needs_no_login(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, tmp_path / "open.db").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.put(
                "/v1/runs/me/r/snapshots/a", content=make_body(1), headers=MSGPACK
            ).raise_for_status()
            page = check_page(client.get("/ui"))
            assert [a["data-run"] for a in page.having("data-run")] == ["me/r"]
            check_page(client.get("/ui/runs/me/r/a"))
            assert "no login" in client.get("/ui/login").text
    finally:
        server.stop()


@pytest.mark.anyio
async def test_the_cookie_is_secure_when_the_request_came_over_https(tmp_path: Path) -> None:
    _record, token = TokenFile(tmp_path / "tokens.json").create("read", "*")
    settings = Settings(db=f"sqlite:///{tmp_path / 'tls.db'}", tokens=tmp_path / "tokens.json")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://vault.example") as client,
    ):
        answer = await client.post(
            "/ui/login", data={"token": token}, headers={"Origin": "https://vault.example"}
        )
        assert answer.status_code == 303
        flags = [p.strip().lower() for p in answer.headers["set-cookie"].split(";")]
        assert {"secure", "httponly", "samesite=strict", "path=/ui"} <= set(flags)
        assert (await client.get("/ui")).status_code == 200
