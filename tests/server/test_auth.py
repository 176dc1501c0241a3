"""Auth: every data route checks token, scope and namespace; tokens are hashed, expire, revoke."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import msgpack
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route

from rngvault import RngVaultError
from rngvault.server import docs
from rngvault.server.app import create_app
from rngvault.server.settings import Settings
from rngvault.server.tokens import Grant, TokenFile, parse_expiry, parse_grant, token_hash

pytestmark = pytest.mark.anyio
Body = Callable[..., bytes]

PUBLIC = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"} | {
    f"/docs/static/{name}" for name in docs.ASSETS
}
# What each route needs; a route missing here fails the walk below.
SCOPES = {
    ("PUT", "/v1/runs/{namespace}/{run}/snapshots/{name}"): "write",
    ("POST", "/v1/runs/{namespace}/{run}/batch"): "write",
    ("GET", "/v1/runs/{namespace}/{run}/snapshots/{name}"): "read",
    ("DELETE", "/v1/runs/{namespace}/{run}/snapshots/{name}"): "admin",
    ("GET", "/v1/runs/{namespace}/{run}/snapshots"): "read",
    ("GET", "/v1/runs/{namespace}/{run}/steps"): "read",
    ("GET", "/v1/runs"): "read",
    ("GET", "/v1/runs/{namespace}/{run}"): "read",
    ("PUT", "/v1/runs/{namespace}/{run}/record"): "write",
    ("GET", "/v1/seeds"): "read",
    ("DELETE", "/v1/runs/{namespace}/{run}"): "admin",
    ("POST", "/v1/admin/gc"): "admin",
    ("GET", "/metrics"): "admin*",  # store-wide counts: an admin token for every namespace
}
LOWER = {"write": "read", "admin": "write", "admin*": "admin"}
# The pages: public routes with the status they answer without a token, and the pages
# that read (a token in the cookie or the Authorization header, with the API's scopes; none
# usable: a redirect to the login form; another namespace: a 403 page).
UI_PUBLIC = {
    ("GET", "/"): 307,
    ("GET", "/ui/static/{filename}"): 200,
    ("GET", "/ui/login"): 200,
    ("POST", "/ui/login"): 401,  # no token given: the form again, with an error
    ("POST", "/ui/logout"): 303,
}
UI_READ = {
    ("GET", "/ui"),
    ("GET", "/ui/diff"),
    ("GET", "/ui/divergence"),
    ("GET", "/ui/seeds"),
    ("GET", "/ui/runs/{namespace}/{run}"),
    ("GET", "/ui/runs/{namespace}/{run}/{name}"),
    ("GET", "/ui/runs/{namespace}/{run}/{name}/snapshot.{kind}"),
}
# The token "mixed" (read:*, write:alice, admin:bob) on each route, for namespace alice:
# allowed where one of its grants has the scope over alice (or any namespace, for routes
# that name none); /metrics needs admin over '*'.
MIXED_ALLOWED = {
    ("PUT", "/v1/runs/{namespace}/{run}/snapshots/{name}"): True,
    ("POST", "/v1/runs/{namespace}/{run}/batch"): True,
    ("GET", "/v1/runs/{namespace}/{run}/snapshots/{name}"): True,
    ("DELETE", "/v1/runs/{namespace}/{run}/snapshots/{name}"): False,
    ("GET", "/v1/runs/{namespace}/{run}/snapshots"): True,
    ("GET", "/v1/runs/{namespace}/{run}/steps"): True,
    ("GET", "/v1/runs"): True,
    ("GET", "/v1/runs/{namespace}/{run}"): True,
    ("PUT", "/v1/runs/{namespace}/{run}/record"): True,
    ("GET", "/v1/seeds"): True,
    ("DELETE", "/v1/runs/{namespace}/{run}"): False,
    ("POST", "/v1/admin/gc"): True,
    ("GET", "/metrics"): False,
}


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    """Tokens by label, in a fresh tokens file at tmp_path/tokens.json."""
    file = TokenFile(tmp_path / "tokens.json")
    made = {}
    for label, scope, namespace in [
        ("read", "read", "alice"),
        ("write", "write", "alice"),
        ("admin", "admin", "alice"),
        ("bob-admin", "admin", "bob"),
        ("teams", "write", "team-*"),
        ("admin*", "admin", "*"),
    ]:
        made[label] = file.create(scope, namespace)[1]
    made["mixed"] = file.create(grants=["read:*", ("write", "alice"), Grant("admin", "bob")])[1]
    made["repro"] = file.create(grants=["read:*", "write:bob"])[1]
    made["union"] = file.create(grants=["read:alice", "write:team-*", "admin:bob"])[1]
    made["expired"] = file.create("admin", "*", expires=time.time() - 1)[1]
    record, made["revoked"] = file.create("admin", "*")
    file.revoke(record.id)
    return made


@pytest.fixture
async def remote(tmp_path: Path, tokens: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client from another machine (192.0.2.10) of a server with tokens."""
    settings = Settings(
        host="0.0.0.0", db=f"sqlite:///{tmp_path / 'auth.db'}", tokens=tmp_path / "tokens.json"
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://vault") as client,
    ):
        client.app = app  # type: ignore[attr-defined]
        yield client


def walk(routes: list) -> list[BaseRoute]:
    """Every route of the app, through the routers it includes."""
    found: list[BaseRoute] = []
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)  # an included router
        found += [c.original_route for c in contexts()] if contexts else [route]
    return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body):
    url = path.format(namespace="alice", run="r", name="s", filename="ui.css", kind="json")
    content = body if method == "PUT" else msgpack.packb([["s", body]]) if "batch" in path else None
    headers = {**headers, "Content-Type": "application/msgpack"}
    return await client.request(method, url, headers=headers, content=content)


async def test_every_route_enforces_token_scope_and_namespace(
    remote: httpx.AsyncClient, tokens: dict[str, str], make_body: Body
) -> None:
    body = make_body(1)
    checked = pages = 0
    for route in walk(remote.app.routes):  # type: ignore[attr-defined]
        assert isinstance(route, (APIRoute, Route))
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if (method, route.path) in UI_PUBLIC:
                answer = await call(remote, method, route.path, {}, body)
                assert answer.status_code == UI_PUBLIC[method, route.path], route.path
                pages += 1
                continue
            if (method, route.path) in UI_READ:
                await check_page_auth(remote, method, route.path, tokens, body)
                pages += 1
                continue
            if route.path in PUBLIC:
                answer = await call(remote, method, route.path, {}, body)
                assert answer.status_code == 200, route.path
                continue
            need = SCOPES[method, route.path]  # KeyError: a new route nobody classified
            checked += 1
            for headers in (
                {},
                bearer("rv_000000000000_" + "x" * 43),
                bearer("nonsense"),
                bearer(tokens["expired"]),
                bearer(tokens["revoked"]),
            ):
                answer = await call(remote, method, route.path, headers, body)
                assert answer.status_code == 401, (method, route.path, headers)
                assert answer.json()["error"] == "unauthorized"
                assert answer.headers["www-authenticate"].startswith("Bearer")
            if need in LOWER:
                answer = await call(remote, method, route.path, bearer(tokens[LOWER[need]]), body)
                assert answer.status_code == 403, (method, route.path)
            if "{namespace}" in route.path:
                other = await call(remote, method, route.path, bearer(tokens["bob-admin"]), body)
                assert other.status_code == 403, (method, route.path)
                assert "not 'alice'" in other.json()["detail"]
            allowed = await call(remote, method, route.path, bearer(tokens[need]), body)
            assert allowed.status_code not in (401, 403), (method, route.path)
            mixed = await call(remote, method, route.path, bearer(tokens["mixed"]), body)
            if MIXED_ALLOWED[method, route.path]:
                assert mixed.status_code not in (401, 403), (method, route.path)
            else:
                assert mixed.status_code == 403, (method, route.path)
    assert checked == len(SCOPES) == len(MIXED_ALLOWED)
    assert pages == len(UI_PUBLIC) + len(UI_READ)


async def check_page_auth(
    remote: httpx.AsyncClient, method: str, path: str, tokens: dict[str, str], body: bytes
) -> None:
    """A page: no usable token goes to the login form; read over alice is needed."""
    for headers in ({}, bearer("nonsense"), bearer(tokens["expired"]), bearer(tokens["revoked"])):
        answer = await call(remote, method, path, headers, body)
        assert answer.status_code == 303, (method, path, headers)
        assert answer.headers["location"].startswith("/ui/login?next=")
    if "{namespace}" in path:
        other = await call(remote, method, path, bearer(tokens["bob-admin"]), body)
        assert other.status_code == 403, (method, path)
        assert "not read namespace 'alice'" in other.text.replace("&#39;", "'")
    for label in ("read", "mixed"):
        allowed = await call(remote, method, path, bearer(tokens[label]), body)
        assert allowed.status_code not in (303, 401, 403), (method, path, label)


async def test_a_token_reads_every_namespace_and_writes_only_its_own(
    remote: httpx.AsyncClient, tokens: dict[str, str], make_body: Body
) -> None:
    """read:* and write:bob: Bob's reproduction reads Alice's run and writes his own."""
    msgpack = {"Content-Type": "application/msgpack"}
    alice = {**msgpack, **bearer(tokens["write"])}
    assert (
        await remote.put("/v1/runs/alice/r/snapshots/s", content=make_body(1), headers=alice)
    ).status_code == 201
    bob = {**msgpack, **bearer(tokens["repro"])}
    read = await remote.get("/v1/runs/alice/r/snapshots/s", headers=bob)
    assert read.status_code == 200 and read.content == make_body(1)
    wrote = await remote.put("/v1/runs/bob/repro/snapshots/s", content=make_body(1), headers=bob)
    assert wrote.status_code == 201
    refused = await remote.put("/v1/runs/alice/r/snapshots/t", content=make_body(2), headers=bob)
    assert refused.status_code == 403
    assert "may write namespaces 'bob', not 'alice'" in refused.json()["detail"]
    listed = (await remote.get("/v1/runs", headers=bob)).json()["runs"]
    assert [(r["namespace"], r["run"]) for r in listed] == [("alice", "r"), ("bob", "repro")]


async def test_listings_show_the_union_of_a_tokens_readable_namespaces(
    remote: httpx.AsyncClient, tokens: dict[str, str], make_body: Body
) -> None:
    root = {"Content-Type": "application/msgpack", **bearer(tokens["admin*"])}
    for namespace in ("alice", "bob", "carol", "team-a"):
        url = f"/v1/runs/{namespace}/r/snapshots/s"
        assert (await remote.put(url, content=make_body(1), headers=root)).status_code == 201
    token = tokens["union"]
    listed = (await remote.get("/v1/runs", headers=bearer(token))).json()["runs"]
    assert [r["namespace"] for r in listed] == ["alice", "bob", "team-a"]
    narrowed = await remote.get("/v1/runs", params={"namespace": "carol"}, headers=bearer(token))
    assert narrowed.status_code == 403
    assert "may read namespaces 'alice', 'team-*', 'bob', not 'carol'" in narrowed.json()["detail"]


async def test_a_namespace_token_cannot_read_or_write_another_namespace(
    remote: httpx.AsyncClient, tokens: dict[str, str], make_body: Body
) -> None:
    msgpack = {"Content-Type": "application/msgpack"}
    bob = "/v1/runs/bob/r/snapshots/s"
    put = await remote.put(
        bob, content=make_body(1), headers={**msgpack, **bearer(tokens["bob-admin"])}
    )
    assert put.status_code == 201
    alice = bearer(tokens["admin"])
    assert (await remote.get(bob, headers=alice)).status_code == 403
    assert (
        await remote.put(bob, content=make_body(2), headers={**msgpack, **alice})
    ).status_code == 403
    assert (await remote.delete(bob, headers=alice)).status_code == 403
    assert (
        await remote.get("/v1/runs", params={"namespace": "bob"}, headers=alice)
    ).status_code == 403
    await remote.put(
        "/v1/runs/alice/r/snapshots/s", content=make_body(3), headers={**msgpack, **alice}
    )
    await remote.put(
        "/v1/runs/team-x/r/snapshots/s",
        content=make_body(3),
        headers={**msgpack, **bearer(tokens["teams"])},
    )
    listed = (await remote.get("/v1/runs", headers=alice)).json()["runs"]
    assert [(r["namespace"], r["run"]) for r in listed] == [("alice", "r")]
    teams = (await remote.get("/v1/runs", headers=bearer(tokens["teams"]))).json()["runs"]
    assert [r["namespace"] for r in teams] == ["team-x"]


async def test_metrics_need_an_admin_token_for_every_namespace_from_another_machine(
    remote: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    assert (await remote.get("/metrics")).status_code == 401
    for label in ("read", "write", "admin", "teams", "mixed"):  # the counts are store-wide
        answer = await remote.get("/metrics", headers=bearer(tokens[label]))
        assert answer.status_code == 403, label
        assert "admin token for namespaces '*'" in answer.json()["detail"]
    answer = await remote.get("/metrics", headers=bearer(tokens["admin*"]))
    assert answer.status_code == 200
    assert "rngvault_requests_total" in answer.text


async def test_a_revoked_token_stops_working_without_a_restart(
    remote: httpx.AsyncClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    file = TokenFile(tmp_path / "tokens.json")
    record, token = file.create("read", "alice")
    assert (await remote.get("/v1/runs", headers=bearer(token))).status_code == 200
    file.revoke(record.id)
    deadline = time.monotonic() + 5
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = (await remote.get("/v1/runs", headers=bearer(token))).status_code
    assert status == 401


def test_tokens_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    file = TokenFile(tmp_path / "t.json")
    record, token = file.create("write", "alice", note="ci")
    text = (tmp_path / "t.json").read_text()
    assert token not in text and token.split("_", 2)[2] not in text  # the secret may hold "_"
    assert record.id in text
    assert json.loads(text)["tokens"][0]["grants"] == [{"scope": "write", "namespace": "alice"}]
    assert stat.S_IMODE(os.stat(tmp_path / "t.json").st_mode) == 0o600
    listed = file.load()
    assert [(r.id, r.scope, r.namespace, r.note) for r in listed] == [
        (record.id, "write", "alice", "ci")
    ]


def test_tokens_created_by_several_processes_at_once_are_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from rngvault.server.tokens import TokenFile\n"
        "file = TokenFile(Path(sys.argv[1]))\n"
        "while time.time() < float(sys.argv[2]):\n"
        "    pass\n"
        "for _ in range(10):\n"
        "    print(file.create('read', 'ns')[0].id)\n"
    )
    start = time.time() + 1.5  # every process starts creating at the same moment
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    made = [line for w in workers for line in w.communicate(timeout=60)[0].split()]
    assert all(w.returncode == 0 for w in workers)
    assert len(made) == 60
    assert sorted(r.id for r in TokenFile(path).load()) == sorted(made)


def test_token_options_are_checked(tmp_path: Path) -> None:
    file = TokenFile(tmp_path / "t.json")
    with pytest.raises(RngVaultError, match="invalid scope 'owner'"):
        file.create("owner", "alice")
    with pytest.raises(RngVaultError, match="invalid namespace pattern"):
        file.create("read", "alice/bob")
    with pytest.raises(RngVaultError, match="invalid scope 'owner'"):
        file.create(grants=["read:*", "owner:bob"])
    with pytest.raises(RngVaultError, match="at least one grant"):
        file.create(grants=[])
    with pytest.raises(RngVaultError, match="either a scope and a namespace, or grants"):
        file.create("read", "alice", grants=["write:bob"])
    assert not (tmp_path / "t.json").exists()  # nothing refused was written
    with pytest.raises(RngVaultError, match="no token with id"):
        file.revoke("ffffffffffff")
    assert parse_expiry("2d", 100.0) == 100.0 + 2 * 86400
    assert parse_expiry("2030-01-01", 0) == 1893456000.0
    with pytest.raises(RngVaultError, match="invalid expiry"):
        parse_expiry("soon", 0)


def test_grants_parse_from_scope_colon_pattern() -> None:
    assert parse_grant("read:*") == Grant("read", "*")
    assert parse_grant(" write:team-? ") == Grant("write", "team-?")
    assert str(parse_grant("admin:bob")) == "admin:bob"
    for text, error in [
        ("read", "invalid grant 'read': write SCOPE:PATTERN"),
        ("owner:bob", "invalid scope 'owner'"),
        ("read:", "invalid namespace pattern ''"),
        ("read:a/b", "invalid namespace pattern 'a/b'"),
    ]:
        with pytest.raises(RngVaultError, match=error):
            parse_grant(text)


def test_a_token_of_several_grants_is_stored_once_with_all_of_them(tmp_path: Path) -> None:
    file = TokenFile(tmp_path / "t.json")
    record, _token = file.create(grants=["read:*", "write:bob", "read:*"], note="repro")
    assert record.grants == (Grant("read", "*"), Grant("write", "bob"))
    assert file.load() == [record]
    assert (record.scope, record.namespace) == ("write", "*,bob")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["version"] == 2
    assert data["tokens"][0]["grants"] == [
        {"scope": "read", "namespace": "*"},
        {"scope": "write", "namespace": "bob"},
    ]


async def test_a_version_1_tokens_file_still_works_and_is_rewritten_as_version_2(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    token = "rv_0123456789ab_" + "A" * 43
    old = {
        "format": "rngvault-tokens",
        "version": 1,
        "tokens": [
            {"id": "0123456789ab", "sha256": token_hash(token), "scope": "write",
             "namespace": "alice", "created": 1.0, "expires": None, "revoked": None,
             "note": "old"}
        ],
    }  # fmt: skip
    path.write_text(json.dumps(old))
    file = TokenFile(path)
    [record] = file.load()
    assert (record.id, record.grants, record.note) == (
        "0123456789ab",
        (Grant("write", "alice"),),
        "old",
    )
    settings = Settings(host="0.0.0.0", db=f"sqlite:///{tmp_path / 'v1.db'}", tokens=path)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://vault") as client,
    ):
        assert (await client.get("/v1/runs", headers=bearer(token))).status_code == 200
        denied = await client.get("/v1/runs", params={"namespace": "bob"}, headers=bearer(token))
        assert denied.status_code == 403
    file.create("read", "bob")
    data = json.loads(path.read_text())
    assert data["version"] == 2
    assert data["tokens"][0]["grants"] == [{"scope": "write", "namespace": "alice"}]
    assert [r.id for r in file.load()] == ["0123456789ab", data["tokens"][1]["id"]]


def test_a_tokens_file_of_a_newer_version_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"format": "rngvault-tokens", "version": 3, "tokens": []}))
    with pytest.raises(RngVaultError, match="has version 3; this rngvault reads versions 1 and 2"):
        TokenFile(path).load()


def test_without_tokens_only_a_loopback_host_may_serve(tmp_path: Path) -> None:
    base = Settings(db=f"sqlite:///{tmp_path / 'x.db'}", tokens=tmp_path / "none.json")
    create_app(base)
    create_app(base.replace(host="::1"))
    with pytest.raises(RngVaultError, match="refusing to serve 0.0.0.0 without tokens"):
        create_app(base.replace(host="0.0.0.0"))
    create_app(base.replace(host="0.0.0.0", insecure_open=True))
    with pytest.raises(RngVaultError, match="does not exist") as missing:
        create_app(base.replace(tokens_required=True))
    named = f"'rngvault token create --tokens {tmp_path / 'none.json'}'"
    assert named in str(missing.value)
    with pytest.raises(RngVaultError, match="refusing") as refused:
        create_app(base.replace(host="0.0.0.0"))
    assert named in str(refused.value)


async def test_an_open_server_requires_tokens_once_the_first_is_created(
    client: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="rngvault.server")
    assert (await client.get("/v1/runs")).status_code == 200
    _record, token = TokenFile(settings.tokens).create("read", "*")
    deadline = time.monotonic() + 5
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = (await client.get("/v1/runs")).status_code
    assert status == 401
    assert (await client.get("/v1/runs", headers=bearer(token))).status_code == 200
    path = settings.tokens.resolve()
    assert f"tokens file {path} appeared: tokens are required from now on" in caplog.text
    settings.tokens.unlink()  # removing the file does not open the server again
    time.sleep(1.1)
    assert (await client.get("/v1/runs")).status_code == 401
    assert f"tokens file {path} is gone: no token is accepted until it is back" in caplog.text
    assert (await client.get("/v1/runs", headers=bearer(token))).status_code == 401
