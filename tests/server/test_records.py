"""GET /v1/runs/{namespace}/{run} and PUT /v1/runs/{namespace}/{run}/record on a real server:
a record is written once and read back with the run's counts; scopes and namespaces are
enforced; a bad body gets a 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from rngvault._record import RECORD_MAX_BYTES
from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess

Body = Callable[..., bytes]
JSON = {"Content-Type": "application/json"}
RECORD = {
    "seed": 3407,
    "seeding": {"seeded": ["random", "numpy"], "deterministic": True, "per_worker": []},
    "config": {"lr": 0.1, "layers": [64, 64], "name": "résumé"},
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
    "command": ["train.py", "--lr", "0.1"],
    "host": "node-1",
    "created": 1_700_000_000.5,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """A server with tokens: write over alice, read over alice, write over bob."""
    home = tmp_path_factory.mktemp("records-server")
    file = TokenFile(home / "tokens.json")
    tokens = {
        "write": file.create("write", "alice")[1],
        "read": file.create("read", "alice")[1],
        "bob": file.create("write", "bob")[1],
    }
    server = ServerProcess(home, home / "server.db", "--tokens", str(home / "tokens.json"))
    try:
        yield server.start(), tokens
    finally:
        server.stop()


@pytest.fixture
def api(served: tuple[ServerProcess, dict]) -> Iterator[Callable[..., httpx.Response]]:
    """``api(method, path, token=..., **kwargs)`` against the live server."""
    server, tokens = served
    with httpx.Client(base_url=server.url, timeout=10) as client:

        def call(method: str, path: str, token: str = "write", **kwargs) -> httpx.Response:
            headers = {"Authorization": f"Bearer {tokens[token]}", **kwargs.pop("headers", {})}
            return client.request(method, path, headers=headers, **kwargs)

        yield call


def test_a_record_is_written_once_and_read_with_the_run(
    api: Callable[..., httpx.Response], make_body: Body
) -> None:
    first = api("PUT", "/v1/runs/alice/once/record", json=RECORD)
    assert first.status_code == 201, first.text
    assert first.json() == {"created": True, "record": RECORD}
    other = {**RECORD, "seed": 17}
    again = api("PUT", "/v1/runs/alice/once/record", json=other)
    assert again.status_code == 200, again.text
    assert again.json() == {"created": False, "record": RECORD}
    snapshot = api(
        "PUT",
        "/v1/runs/alice/once/snapshots/epoch1",
        content=make_body(1),
        headers={"Content-Type": "application/msgpack"},
    )
    assert snapshot.status_code == 201, snapshot.text
    run = api("GET", "/v1/runs/alice/once", token="read")
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["record"] == RECORD
    assert (body["namespace"], body["run"], body["snapshots"]) == ("alice", "once", 1)
    assert body["created"] <= body["updated"]


def test_a_run_without_a_record_reads_empty_and_an_unknown_run_is_404(
    api: Callable[..., httpx.Response], make_body: Body
) -> None:
    api(
        "PUT",
        "/v1/runs/alice/plain/snapshots/epoch1",
        content=make_body(2),
        headers={"Content-Type": "application/msgpack"},
    )
    run = api("GET", "/v1/runs/alice/plain", token="read")
    assert run.status_code == 200, run.text
    assert run.json()["record"] == {} and run.json()["snapshots"] == 1
    missing = api("GET", "/v1/runs/alice/nowhere", token="read")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "no run alice/nowhere"}


def test_a_record_creates_its_run_which_lists_with_no_snapshot(
    api: Callable[..., httpx.Response],
) -> None:
    assert api("PUT", "/v1/runs/alice/fresh/record", json={"seed": 1}).status_code == 201
    listed = api("GET", "/v1/runs", token="read", params={"namespace": "alice"}).json()
    (fresh,) = [r for r in listed["runs"] if r["run"] == "fresh"]
    assert fresh["snapshots"] == 0
    snapshots = api("GET", "/v1/runs/alice/fresh/snapshots", token="read")
    assert snapshots.status_code == 200 and snapshots.json()["snapshots"] == []


def test_scopes_and_namespaces_apply(api: Callable[..., httpx.Response]) -> None:
    refused = api("PUT", "/v1/runs/alice/scoped/record", token="read", json={"seed": 1})
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    other = api("PUT", "/v1/runs/alice/scoped/record", token="bob", json={"seed": 1})
    assert other.status_code == 403 and "not 'alice'" in other.json()["detail"]
    assert api("GET", "/v1/runs/alice/scoped", token="bob").status_code == 403
    anonymous = httpx.put(
        api("GET", "/healthz", token="read").url.copy_with(path="/v1/runs/alice/scoped/record"),
        json={"seed": 1},
    )
    assert anonymous.status_code == 401
    assert api("GET", "/v1/runs/alice/scoped", token="read").status_code == 404  # none written
    bad_name = api("GET", "/v1/runs/alice/.hidden", token="read")
    assert bad_name.status_code == 400 and bad_name.json()["error"] == "invalid_name"


@pytest.mark.parametrize(
    ("content", "headers", "status", "error", "says"),
    [
        (b"{not json", JSON, 422, "invalid_record", "not JSON"),
        (b'"a string"', JSON, 422, "invalid_record", "must be a JSON object"),
        (b"[1, 2]", JSON, 422, "invalid_record", "must be a JSON object"),
        (b'{"seed": "3407"}', JSON, 422, "invalid_record", "'seed'"),
        (b'{"seed": -1}', JSON, 422, "invalid_record", "'seed'"),
        (b'{"colour": 1}', JSON, 422, "invalid_record", "no field 'colour'"),
        (b'{"config": {"lr": NaN}}', JSON, 422, "invalid_record", "finite"),
        (b'{"host": "\xff\xfe"}', JSON, 422, "invalid_record", "not UTF-8"),
        (b'{"host": "\\ud800"}', JSON, 422, "invalid_record", "surrogate"),
        (b'{"config": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON, 422, "invalid_record", "deep"),
        (b'{"seed": 1' + b"0" * 5000 + b"}", JSON, 422, "invalid_record", "digits"),
        (
            b'{"seed": 1}',
            {"Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (b"", JSON, 422, "invalid_record", "not JSON"),
    ],
)
def test_a_bad_body_is_refused_naming_what_is_wrong(
    api: Callable[..., httpx.Response],
    content: bytes,
    headers: dict[str, str],
    status: int,
    error: str,
    says: str,
) -> None:
    answer = api("PUT", "/v1/runs/alice/bad/record", content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert says in answer.json()["detail"]
    assert api("GET", "/v1/runs/alice/bad", token="read").status_code == 404  # nothing kept


def test_a_body_over_the_limit_is_413_and_a_record_just_under_it_is_kept(
    api: Callable[..., httpx.Response],
) -> None:
    huge = json.dumps({"config": {"blob": "x" * (2 * RECORD_MAX_BYTES)}}).encode()
    answer = api("PUT", "/v1/runs/alice/big/record", content=huge, headers=JSON)
    assert answer.status_code == 413 and answer.json()["error"] == "too_large"
    spaced = json.dumps({"seed": 5}, indent=RECORD_MAX_BYTES).encode()  # whitespace only
    assert RECORD_MAX_BYTES < len(spaced) < 2 * RECORD_MAX_BYTES
    kept = api("PUT", "/v1/runs/alice/big/record", content=spaced, headers=JSON)
    assert kept.status_code == 201 and kept.json()["record"] == {"seed": 5}
    over = {"command": ["x" * 1000] * (RECORD_MAX_BYTES // 1000 + 1)}  # valid but too big
    refused = api("PUT", "/v1/runs/alice/big2/record", json=over)
    assert refused.status_code == 422 and str(RECORD_MAX_BYTES) in refused.json()["detail"]


def test_openapi_describes_both_routes(api: Callable[..., httpx.Response]) -> None:
    spec = api("GET", "/openapi.json", token="read").json()
    run = spec["paths"]["/v1/runs/{namespace}/{run}"]["get"]
    assert run["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RunDetailBody"
    )
    assert "record" in spec["components"]["schemas"]["RunDetailBody"]["properties"]
    put = spec["paths"]["/v1/runs/{namespace}/{run}/record"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
    assert {"200", "201", "413", "415", "422"} <= set(put["responses"])
