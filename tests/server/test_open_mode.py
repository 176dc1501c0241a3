"""A server without tokens stays local: clients on this machine only, loopback Host names only.

Real servers here are started the two documented ways, ``rngvault serve`` and
``uvicorn --factory rngvault.server.app:app_from_env``, both bound to 127.0.0.1. A client on
another machine is simulated with ``X-Forwarded-For``, which uvicorn trusts from 127.0.0.1
by default: the app then sees that address as the client's, as it would behind a local
reverse proxy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from rngvault.server.app import create_app
from rngvault.server.settings import Settings
from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess, free_port

Body = Callable[..., bytes]
MSGPACK = {"Content-Type": "application/msgpack"}
SNAPSHOT = "/v1/runs/alice/r/snapshots/s"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("open-server")
    server = ServerProcess(home, home / "open.db")
    try:
        yield server.start()
    finally:
        server.stop()


def test_a_rebound_host_name_gets_nothing(open_server: ServerProcess, make_body: Body) -> None:
    rebound = {"Host": "rebind.attacker.example"}
    with httpx.Client(base_url=open_server.url, timeout=10) as client:
        put = client.put(SNAPSHOT, content=make_body(1), headers={**MSGPACK, **rebound})
        assert put.status_code == 421
        assert put.json()["error"] == "misdirected_request"
        assert "rebind.attacker.example" in put.json()["detail"]
        for method in ("GET", "DELETE"):
            assert client.request(method, SNAPSHOT, headers=rebound).status_code == 421
        assert client.get("/v1/runs", headers=rebound).status_code == 421
        # nothing was stored by the refused PUT
        assert client.get(SNAPSHOT).status_code == 404


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:8000", "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:8000"]
)
def test_loopback_host_names_are_answered(open_server: ServerProcess, host: str) -> None:
    answer = httpx.get(open_server.url + "/healthz", headers={"Host": host}, timeout=10)
    assert answer.status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1.attacker.example", "localhost.example", "::1x", ""])
def test_look_alike_host_names_are_refused(open_server: ServerProcess, host: str) -> None:
    answer = httpx.get(open_server.url + "/healthz", headers={"Host": host}, timeout=10)
    assert answer.status_code == 421


def test_rngvault_serve_refuses_clients_on_other_machines(open_server: ServerProcess) -> None:
    answer = httpx.get(
        open_server.url + "/v1/runs", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10
    )
    assert answer.status_code == 403
    detail = answer.json()["detail"]
    assert "203.0.113.7" in detail and "rngvault token create" in detail


def test_uvicorn_factory_refuses_clients_on_other_machines(tmp_path: Path) -> None:
    """``uvicorn --factory ...app_from_env`` with no tokens: the app itself checks the peer,
    whatever address uvicorn was told to bind (here 127.0.0.1, reached as if from afar)."""
    port = free_port()
    env = {**os.environ, "RNGVAULT_HOME": str(tmp_path), "RNGVAULT_DB": str(tmp_path / "u.db")}
    env.pop("RNGVAULT_TOKENS", None)
    command = [sys.executable, "-m", "uvicorn", "--factory", "rngvault.server.app:app_from_env"]
    with open(tmp_path / "uvicorn.log", "wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "uvicorn.log").read_text()
            time.sleep(0.05)
        far = httpx.get(url + "/v1/runs", headers={"X-Forwarded-For": "198.51.100.4"}, timeout=10)
        assert far.status_code == 403
        assert far.json()["error"] == "forbidden"
        rebound = httpx.get(url + "/v1/runs", headers={"Host": "evil.example"}, timeout=10)
        assert rebound.status_code == 421
        assert httpx.get(url + "/v1/runs", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=15)


def _client(app: object, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


@pytest.mark.anyio
async def test_insecure_open_lets_other_machines_in_but_still_checks_host(tmp_path: Path) -> None:
    settings = Settings(
        host="0.0.0.0",
        db=f"sqlite:///{tmp_path / 'a.db'}",
        tokens=tmp_path / "none.json",
        insecure_open=True,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), _client(app, "192.0.2.10") as client:
        assert (await client.get("/v1/runs")).status_code == 200
        rebound = await client.get("/v1/runs", headers={"Host": "rebind.attacker.example"})
        assert rebound.status_code == 421


@pytest.mark.anyio
async def test_allowed_hosts_extend_the_loopback_names(tmp_path: Path) -> None:
    base = Settings(db=f"sqlite:///{tmp_path / 'a.db'}", tokens=tmp_path / "none.json")
    app = create_app(base.replace(allowed_hosts=("vault.lab",)))
    async with app.router.lifespan_context(app), _client(app, "127.0.0.1") as client:
        assert (await client.get("/healthz", headers={"Host": "vault.lab:8000"})).status_code == 200
        assert (await client.get("/healthz", headers={"Host": "other.lab"})).status_code == 421
    anything = create_app(base.replace(allowed_hosts=("*",)))
    async with anything.router.lifespan_context(anything), _client(anything, "::1") as client:
        assert (await client.get("/healthz", headers={"Host": "other.lab"})).status_code == 200


@pytest.mark.anyio
async def test_a_server_with_tokens_leaves_hosts_and_peers_to_the_tokens(
    tmp_path: Path, make_body: Body
) -> None:
    _record, token = TokenFile(tmp_path / "tokens.json").create("admin", "*")
    settings = Settings(
        host="0.0.0.0", db=f"sqlite:///{tmp_path / 'a.db'}", tokens=tmp_path / "tokens.json"
    )
    app = create_app(settings)
    headers = {"Host": "vault.example.org", "Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app), _client(app, "192.0.2.10") as client:
        assert (await client.get("/v1/runs", headers={"Host": "x.example"})).status_code == 401
        put = await client.put(SNAPSHOT, content=make_body(1), headers={**MSGPACK, **headers})
        assert put.status_code == 201


@pytest.mark.anyio
async def test_ipv4_mapped_loopback_is_this_machine(tmp_path: Path) -> None:
    settings = Settings(db=f"sqlite:///{tmp_path / 'a.db'}", tokens=tmp_path / "none.json")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with _client(app, "::ffff:127.0.0.1") as client:
            assert (await client.get("/v1/runs")).status_code == 200
        async with _client(app, "::ffff:192.0.2.1") as client:
            assert (await client.get("/v1/runs")).status_code == 403


def test_control_characters_in_paths_cannot_forge_log_lines(open_server: ServerProcess) -> None:
    forged = "/v1/runs/a%0aINFO:%20forged%0d/r/snapshots/s"
    answer = httpx.get(open_server.url + forged, timeout=10)
    assert answer.status_code == 400
    time.sleep(0.2)
    log = open_server.log()
    assert not any(line.startswith("INFO: forged") for line in log.splitlines())
    assert "a\\nINFO: forged\\r" in log


@pytest.mark.anyio
async def test_allowed_hosts_match_with_brackets_and_ports_as_written(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {},
        db=f"sqlite:///{tmp_path / 'a.db'}",
        tokens=str(tmp_path / "none.json"),
        allowed_hosts="[fe80::1],vault.lab:8000",
    )
    assert settings.allowed_hosts == ("fe80::1", "vault.lab")
    app = create_app(settings.replace(tokens_required=False))
    async with app.router.lifespan_context(app), _client(app, "127.0.0.1") as client:
        for host in ("[fe80::1]:8000", "vault.lab", "vault.lab:9000"):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200


@pytest.mark.anyio
async def test_metrics_on_this_machine_need_a_loopback_host_name_too(tmp_path: Path) -> None:
    """With tokens, /metrics needs none from a local scraper; a page rebinding its own name
    to 127.0.0.1 is not one."""
    TokenFile(tmp_path / "tokens.json").create("read", "alice")
    settings = Settings(db=f"sqlite:///{tmp_path / 'a.db'}", tokens=tmp_path / "tokens.json")
    app = create_app(settings)
    async with app.router.lifespan_context(app), _client(app, "127.0.0.1") as client:
        assert (await client.get("/metrics", headers={"Host": "127.0.0.1:8000"})).status_code == 200
        rebound = await client.get("/metrics", headers={"Host": "rebind.attacker.example"})
        assert rebound.status_code == 401
