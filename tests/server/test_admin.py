"""The admin route /v1/admin/gc: retention over REST, scoped to the token's namespaces."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from rngvault.server.app import create_app
from rngvault.server.settings import Settings
from rngvault.server.tokens import TokenFile

pytestmark = pytest.mark.anyio
Body = Callable[..., bytes]
MSGPACK = {"Content-Type": "application/msgpack"}


async def fill(client: httpx.AsyncClient, make_body: Body, runs: dict[str, int], **kw) -> None:
    for run, count in runs.items():
        for i in range(count):
            answer = await client.put(
                f"/v1/runs/{run}/snapshots/s{i}", content=make_body(i), headers={**MSGPACK, **kw}
            )
            assert answer.status_code == 201, answer.text


async def names(client: httpx.AsyncClient, run: str, **headers: str) -> list[str]:
    answer = await client.get(f"/v1/runs/{run}/snapshots", headers=headers)
    if answer.status_code == 404:
        return []
    return [s["name"] for s in answer.json()["snapshots"]]


async def test_gc_dry_run_then_gc_answer_what_goes_and_delete_it(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    await fill(client, make_body, {"alice/resnet-a": 4, "alice/resnet-b": 2, "alice/vit": 3})
    body = {"pattern": "alice/resnet-*", "keep_last": 1, "dry_run": True}
    dry = await client.post("/v1/admin/gc", json=body)
    assert dry.status_code == 200, dry.text
    answer = dry.json()
    assert (answer["runs"], answer["snapshots"], answer["ranks"], answer["blobs"]) == (2, 4, 4, 0)
    assert answer["dry_run"] is True and answer["stored_before"] is None
    assert {(s["run"], s["name"]) for s in answer["sample"]} == {
        ("resnet-a", "s0"),
        ("resnet-a", "s1"),
        ("resnet-a", "s2"),
        ("resnet-b", "s0"),
    }
    assert await names(client, "alice/resnet-a") == ["s0", "s1", "s2", "s3"]
    done = (await client.post("/v1/admin/gc", json={**body, "dry_run": False})).json()
    assert (done["snapshots"], done["dry_run"]) == (4, False)
    assert done["blobs"] == 0  # alice/vit's snapshots hold the same states
    assert await names(client, "alice/resnet-a") == ["s3"]
    assert await names(client, "alice/resnet-b") == ["s1"]
    assert await names(client, "alice/vit") == ["s0", "s1", "s2"]


async def test_older_than_takes_seconds_or_a_duration(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    await fill(client, make_body, {"alice/r": 3})
    kept = await client.post("/v1/admin/gc", json={"pattern": "*", "older_than": "1d"})
    assert kept.json()["snapshots"] == 0
    assert (
        kept.json()["stored_before"] < (await client.get("/v1/runs")).json()["runs"][0]["created"]
    )
    gone = await client.post("/v1/admin/gc", json={"pattern": "*", "older_than": 0})
    assert gone.json()["snapshots"] == 3
    assert (await client.get("/v1/runs")).json()["runs"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pattern": "alice/*"}, "keep_last, older_than"),
        ({"pattern": "alice/*", "keep_last": -1}, "keep_last"),
        ({"pattern": "alice/*", "keep_last": "many"}, "keep_last"),
        ({"pattern": "alice/*", "older_than": "3 fortnights"}, "older_than"),
        ({"pattern": "alice/*", "older_than": -5}, "older_than"),
        ({"pattern": "alice/*", "older_than": 10**400}, "older_than"),
        ({"pattern": "alice/*", "older_than": "9" * 400 + "d"}, "older_than"),
        ({"pattern": "alice/*", "older_than": "400000w"}, "older_than"),
        ({"pattern": "alice/[ab]*", "keep_last": 1}, "pattern"),
        ({"pattern": "a/b/c", "keep_last": 1}, "pattern"),
        ({"pattern": "", "keep_last": 1}, "pattern"),
        ({"keep_last": 1}, "pattern"),
        ({"pattern": "a/*", "keep_last": 1, "keep": 2}, "keep"),
    ],
)
async def test_a_bad_gc_body_is_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    answer = await client.post("/v1/admin/gc", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request"
    assert field in answer.json()["detail"]


async def test_not_json_is_422(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/admin/gc", content=b"\xff", headers=MSGPACK)
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_request"


@pytest.fixture
async def tokens_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A client from another machine of a server with tokens, and tokens by label."""
    file = TokenFile(tmp_path / "tokens.json")
    made = {
        "root": file.create("admin", "*")[1],
        "bob-admin": file.create("admin", "bob")[1],
        "bob-write": file.create("write", "bob")[1],
        "bob-carol": file.create(grants=["admin:bob", "admin:carol", "write:alice"])[1],
    }
    settings = Settings(
        host="0.0.0.0", db=f"sqlite:///{tmp_path / 'admin.db'}", tokens=tmp_path / "tokens.json"
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://vault") as client,
    ):
        yield client, made


async def test_a_namespace_admin_collects_only_its_namespaces_and_writers_may_not(
    tokens_client: tuple[httpx.AsyncClient, dict[str, str]], make_body: Body
) -> None:
    client, tokens = tokens_client
    root = {"Authorization": f"Bearer {tokens['root']}"}
    await fill(client, make_body, {"alice/r": 3, "bob/r": 3}, **root)
    body = {"pattern": "*", "keep_last": 1}
    for label in ("bob-write",):
        denied = await client.post(
            "/v1/admin/gc", json=body, headers={"Authorization": f"Bearer {tokens[label]}"}
        )
        assert denied.status_code == 403
    assert (await client.post("/v1/admin/gc", json=body)).status_code == 401
    bob = await client.post(
        "/v1/admin/gc", json=body, headers={"Authorization": f"Bearer {tokens['bob-admin']}"}
    )
    assert bob.status_code == 200 and (bob.json()["runs"], bob.json()["snapshots"]) == (1, 2)
    assert await names(client, "alice/r", **root) == ["s0", "s1", "s2"]
    assert await names(client, "bob/r", **root) == ["s2"]


async def test_gc_covers_every_namespace_a_token_administers_and_no_other(
    tokens_client: tuple[httpx.AsyncClient, dict[str, str]], make_body: Body
) -> None:
    client, tokens = tokens_client
    root = {"Authorization": f"Bearer {tokens['root']}"}
    await fill(client, make_body, {"alice/r": 3, "bob/r": 3, "carol/r": 3, "dave/r": 3}, **root)
    answer = await client.post(
        "/v1/admin/gc",
        json={"pattern": "*", "keep_last": 1},
        headers={"Authorization": f"Bearer {tokens['bob-carol']}"},
    )
    assert answer.status_code == 200
    assert (answer.json()["runs"], answer.json()["snapshots"]) == (2, 4)
    assert await names(client, "bob/r", **root) == await names(client, "carol/r", **root) == ["s2"]
    for run in ("alice/r", "dave/r"):  # alice: written, not administered
        assert await names(client, run, **root) == ["s0", "s1", "s2"]
