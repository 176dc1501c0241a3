"""POST /v1/runs/{namespace}/{run}/batch on a real server: each item is answered as a single
PUT of it would be, the bounds are enforced, tokens are checked, stored items read back."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

import rngvault
from rngvault.server.app import create_app
from rngvault.server.routes.batch import ITEM_FRAMING, MAX_ITEMS, batch_limit
from rngvault.server.settings import Settings
from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess
from tests.server.conftest import make_body

MAX_BODY = 20_000  # the server's limit for one snapshot (a test snapshot is about 6 KB)
MSGPACK = {"Content-Type": "application/msgpack"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """A real server with tokens and a small body limit, and its tokens by label."""
    home = tmp_path_factory.mktemp("batch-server")
    file = TokenFile(home / "tokens.json")
    tokens = {
        label: file.create(grants=grants)[1]
        for label, grants in (
            ("admin", ["admin:*"]),
            ("read", ["read:*"]),
            ("alice", ["read:*", "write:alice"]),
        )
    }
    server = ServerProcess(
        home,
        home / "server.db",
        "--tokens",
        str(home / "tokens.json"),
        "--max-body",
        str(MAX_BODY),
    )
    try:
        yield server.start(), tokens
    finally:
        server.stop()


@pytest.fixture
def http(live: tuple[ServerProcess, dict]) -> Iterator[httpx.Client]:
    """A client of the live server with the admin token."""
    server, tokens = live
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def batch(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def post(client: httpx.Client, run: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(f"/v1/runs/{run}/batch", content=body, headers={**MSGPACK, **headers})


def put(client: httpx.Client, run: str, name: str, body: bytes) -> httpx.Response:
    return client.put(f"/v1/runs/{run}/snapshots/{name}", content=body, headers=MSGPACK)


def test_each_item_gets_the_status_and_error_a_single_put_would(http: httpx.Client) -> None:
    """New (201), the same again (200), other content under a taken name (409), undecodable
    (422), a rank over the limit (422), a bad name (400), too large (413): the batch answers
    each in order, and a single PUT of each refused item answers the same status and body."""
    run = "alice/mixed"
    assert put(http, run, "taken", make_body(1)).status_code == 201
    items = [
        ["new", make_body(2)],
        ["taken", make_body(1)],
        ["taken", make_body(3)],
        ["garbage", b"not a snapshot"],
        ["rank", make_body(4, rank=2**31, world_size=2**31 + 1)],
        [".hidden", make_body(5)],
        ["huge", b"x" * (MAX_BODY + 1)],
        ["later", make_body(6)],
    ]
    answer = post(http, run, batch(*items))
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["name"] for r in results] == [name for name, _ in items]
    assert [r["status"] for r in results] == [201, 200, 409, 422, 422, 400, 413, 201]
    for (name, body), result in zip(items, results, strict=True):
        if result["status"] >= 400:
            alone = put(http, run, name, body)
            assert alone.status_code == result["status"], name
            assert alone.json() == {"error": result["error"], "detail": result["detail"]}, name
            assert result["digest"] is None and result["size"] is None
        else:
            assert result["error"] is None and result["detail"] is None
            stored = http.get(f"/v1/runs/{run}/snapshots/{name}").content
            assert (result["digest"], result["rank"]) == (rngvault.decode(stored).digest, 0)
            assert result["size"] == len(stored)


def test_every_stored_item_reads_back_byte_identical(http: httpx.Client) -> None:
    """Durable on answer: each 201 item's GET returns exactly the bytes sent, and the run's
    listing holds them in item order; repeats of a name within a batch keep the first."""
    run = "alice/durable"
    bodies = {f"step{i}": make_body(100 + i, step=i) for i in range(40)}
    items = [[name, body] for name, body in bodies.items()] + [["step0", make_body(999)]]
    results = post(http, run, batch(*items)).json()["results"]
    assert [r["status"] for r in results] == [201] * 40 + [409]
    for name, body in bodies.items():
        assert http.get(f"/v1/runs/{run}/snapshots/{name}").content == body
    listed = http.get(f"/v1/runs/{run}/snapshots", params={"limit": 100}).json()["snapshots"]
    assert [s["name"] for s in listed] == list(bodies)


def test_ranks_come_from_each_snapshots_metadata(http: httpx.Client) -> None:
    run = "alice/ranks"
    items = [["s", make_body(7, rank=r, world_size=3)] for r in range(3)]
    results = post(http, run, batch(*items)).json()["results"]
    assert [(r["status"], r["rank"]) for r in results] == [(201, 0), (201, 1), (201, 2)]
    for rank in range(3):
        got = http.get(f"/v1/runs/{run}/snapshots/s", params={"rank": rank})
        assert got.content == items[rank][1]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "the body is empty"),
        (batch(), 400, "the batch is empty"),
        (msgpack.packb({"a": 1}), 400, "not a msgpack array"),
        (batch(*[["s", b"x"]] * (MAX_ITEMS + 1)), 413, f"the limit is {MAX_ITEMS} per request"),
        (batch(["s", make_body(1)]) + b"\x00", 400, "not valid msgpack"),
        (batch(["s", make_body(1)])[:-10], 400, "not valid msgpack"),
        (
            batch(["a", b"x" * (MAX_BODY + ITEM_FRAMING)], ["b", b"y" * (MAX_BODY + ITEM_FRAMING)]),
            413,
            f"the limit for 2 items of at most {MAX_BODY} bytes each",
        ),
    ],
    ids=["no-body", "no-items", "a-map", "too-many", "trailing", "cut", "too-large"],
)
def test_a_batch_out_of_bounds_is_refused_whole_naming_the_bound(
    http: httpx.Client, body: bytes, status: int, words: str
) -> None:
    answer = post(http, "alice/bounds", body)
    assert answer.status_code == status
    assert words in answer.json()["detail"]
    assert http.get("/v1/runs/alice/bounds/snapshots/s").status_code == 404


def test_a_body_declared_over_the_largest_batch_is_refused_before_it_is_read(
    live: tuple[ServerProcess, dict],
) -> None:
    """Content-Length alone decides: the server answers without waiting for the body."""
    server, tokens = live
    declared = MAX_ITEMS * (MAX_BODY + ITEM_FRAMING) + 1
    head = (
        f"POST /v1/runs/alice/bounds/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {tokens['admin']}\r\nContent-Type: application/msgpack\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head.encode() + b"\x91")
        received = b""
        while not received.endswith(b"}") and (chunk := conn.recv(65536)):
            received += chunk
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 413")
    assert f"at most {MAX_ITEMS} items of at most {MAX_BODY} bytes" in answer


def test_a_body_not_declared_as_msgpack_is_415(http: httpx.Client) -> None:
    answer = post(http, "alice/types", batch(["s", make_body(1)]), **{"Content-Type": "text/plain"})
    assert answer.status_code == 415


def test_tokens_are_checked_for_write_over_the_namespace(
    live: tuple[ServerProcess, dict], http: httpx.Client
) -> None:
    server, tokens = live
    body = batch(["s", make_body(1)])
    url = server.url
    read = httpx.post(
        f"{url}/v1/runs/alice/auth/batch",
        content=body,
        headers={**MSGPACK, "Authorization": f"Bearer {tokens['read']}"},
    )
    assert read.status_code == 403 and "has no 'write' grant" in read.json()["detail"]
    alice = {**MSGPACK, "Authorization": f"Bearer {tokens['alice']}"}
    other = httpx.post(f"{url}/v1/runs/bob/auth/batch", content=body, headers=alice)
    assert other.status_code == 403 and "not 'bob'" in other.json()["detail"]
    assert httpx.post(f"{url}/v1/runs/alice/auth/batch", content=body).status_code == 401
    own = httpx.post(f"{url}/v1/runs/alice/auth/batch", content=body, headers=alice)
    assert own.status_code == 200 and own.json()["results"][0]["status"] == 201
    assert http.get("/v1/runs/bob/auth/snapshots/s").status_code == 404


def test_metrics_count_the_items_by_status(http: httpx.Client) -> None:
    def counts() -> dict[str, float]:
        text = http.get("/metrics").text
        return {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith(("rngvault_batch_items_total", "rngvault_snapshots_stored_total"))
        }

    before = counts()
    post(http, "alice/metrics", batch(["a", make_body(1)], ["a", make_body(1)], ["b", b"no"]))
    after = counts()

    def grew(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew('rngvault_batch_items_total{status="201"}') == 1
    assert grew('rngvault_batch_items_total{status="200"}') == 1
    assert grew('rngvault_batch_items_total{status="422"}') == 1
    assert grew("rngvault_snapshots_stored_total") == 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
async def app_client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """An open app on each backend (PostgreSQL: a database of the session's own server)."""
    if request.param == "postgresql":
        db = request.getfixturevalue("postgres_url")
    else:
        db = f"sqlite:///{tmp_path / 'batch.db'}"
    app = create_app(Settings(db=db, tokens=tmp_path / "no-tokens.json"))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        yield client


@pytest.mark.anyio
async def test_both_backends_answer_a_batch_in_item_order(app_client: httpx.AsyncClient) -> None:
    """Repeats of a name within a batch are stored in item order on every backend: the first
    is 201, the same again 200, other content 409; every stored item reads back."""
    items = [["s", make_body(1)], ["s", make_body(1)], ["s", make_body(2)]]
    items += [[f"t{i}", make_body(10 + i)] for i in range(30)]
    answer = await app_client.post("/v1/runs/alice/b/batch", content=batch(*items), headers=MSGPACK)
    statuses = [r["status"] for r in answer.json()["results"]]
    assert statuses == [201, 200, 409] + [201] * 30
    for name, body in items[3:]:
        assert (await app_client.get(f"/v1/runs/alice/b/snapshots/{name}")).content == body


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "streamed"])
async def test_a_batch_is_bounded_as_a_whole_not_only_per_item(
    tmp_path: Path, declared: bool
) -> None:
    """With a large per-snapshot limit, 256 items could add up to gigabytes held in memory:
    the body as a whole is refused over ``batch_limit``, from Content-Length or while it
    streams in, naming that bound; nothing is stored."""
    max_body = 1024 * 1024
    limit = batch_limit(max_body)
    assert limit < MAX_ITEMS * (max_body + ITEM_FRAMING)
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'cap.db'}", tokens=tmp_path / "none.json", max_body=max_body
    )
    app = create_app(settings)
    chunk = b"\x00" * (1024 * 1024)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"\xdc\x01\x00"  # an array of 256 items
        while sent <= limit:
            sent += len(chunk)
            yield chunk

    headers = {**MSGPACK, "Content-Length": str(limit + 1)} if declared else MSGPACK
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        answer = await client.post("/v1/runs/alice/cap/batch", content=body(), headers=headers)
        assert answer.status_code == 413
        assert f"the limit for a whole batch is {limit} bytes" in answer.json()["detail"]
        assert (await client.get("/v1/runs/alice/cap/snapshots")).status_code == 404
