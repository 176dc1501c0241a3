"""The REST API in process: status codes, exact bytes, JSON rendering, paging, deletion."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx
import msgpack
import pytest

import rngvault
from rngvault import StoreError
from rngvault.server.app import create_app
from rngvault.server.deps import get_store
from rngvault.server.settings import Settings

MSGPACK = {"Content-Type": "application/msgpack"}
URL = "/v1/runs/alice/resnet/snapshots"
Body = Callable[..., bytes]
pytestmark = pytest.mark.anyio


async def put(client: httpx.AsyncClient, name: str, body: bytes, **params: int):
    return await client.put(f"{URL}/{name}", content=body, headers=MSGPACK, params=params)


async def test_put_is_201_then_200_for_the_same_bytes_then_409_for_others(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    first = await put(client, "epoch1", make_body(1))
    assert first.status_code == 201
    assert first.json() == {
        "namespace": "alice",
        "run": "resnet",
        "name": "epoch1",
        "rank": 0,
        "digest": rngvault.decode(make_body(1)).digest,
        "size": len(make_body(1)),
        "created": True,
    }
    again = await put(client, "epoch1", make_body(1))
    assert again.status_code == 200 and again.json()["created"] is False
    other = await put(client, "epoch1", make_body(2))
    assert other.status_code == 409
    assert other.json()["error"] == "conflict"
    assert "already stored with other content" in other.json()["detail"]


async def test_a_rerun_of_the_same_snapshot_is_200_and_other_metadata_409(
    client: httpx.AsyncClient, make_snapshot: Callable[..., rngvault.Snapshot]
) -> None:
    """The same states and user metadata taken again, later, elsewhere: the same snapshot."""
    first = make_snapshot(1, epoch=0)
    stored = await put(client, "epoch0", rngvault.encode(first))
    assert stored.status_code == 201
    rerun = dataclasses.replace(
        first, created=first.created + 86400, environment={"python": "3.12.0"}
    )
    again = await put(client, "epoch0", rngvault.encode(rerun))
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["size"] == len(rngvault.encode(first))
    kept = await client.get(f"{URL}/epoch0")
    assert kept.content == rngvault.encode(first)  # the first bytes stay
    retagged = dataclasses.replace(
        rerun, metadata=dataclasses.replace(first.metadata, tags=("retry",))
    )
    other = await put(client, "epoch0", rngvault.encode(retagged))
    assert other.status_code == 409
    assert "other metadata" in other.json()["detail"]


async def test_get_returns_the_exact_bytes_for_msgpack_and_any(
    client: httpx.AsyncClient, make_body: Body
):
    await put(client, "epoch1", make_body(1))
    for accept in ("application/msgpack", "*/*", None):
        headers = {"Accept": accept} if accept else {}
        answer = await client.get(f"{URL}/epoch1", headers=headers)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/msgpack"
        assert answer.content == make_body(1)


async def test_get_as_json_names_families_positions_and_renders_binary(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    await put(client, "epoch1", make_body(1))
    answer = await client.get(f"{URL}/epoch1", headers={"Accept": "application/json"})
    assert answer.status_code == 200
    data = answer.json()
    snapshot = rngvault.decode(make_body(1))
    assert data["digest"] == snapshot.digest
    assert set(data["generators"]) == set(snapshot.states)
    moving = data["generators"]["moving"]
    assert moving["family"] == "numpy.bitgen"
    assert moving["position"] == snapshot.states["moving"].describe()
    assert isinstance(moving["state"]["state"]["state"], str)  # a 128-bit int as a string
    legacy = data["generators"]["legacy"]["state"]
    assert legacy["key"]["dtype"] == "uint32" and legacy["key"]["shape"] == [624]


async def test_generators_filter_reencodes_only_the_chosen_states(
    client: httpx.AsyncClient, make_body: Body
):
    await put(client, "epoch1", make_body(1))
    answer = await client.get(f"{URL}/epoch1", params={"generators": "moving,fixed"})
    subset = rngvault.decode(answer.content)  # a valid snapshot with its own digest
    assert set(subset.states) == {"moving", "fixed"}
    assert subset.states["moving"] == rngvault.decode(make_body(1)).states["moving"]
    as_json = await client.get(
        f"{URL}/epoch1", params={"generators": "legacy"}, headers={"Accept": "application/json"}
    )
    assert list(as_json.json()["generators"]) == ["legacy"]
    missing = await client.get(f"{URL}/epoch1", params={"generators": "moving,nope"})
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]


async def test_ranks_are_stored_and_fetched_separately(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    rank1 = make_body(5, rank=1, world_size=2)
    assert (await put(client, "epoch1", rank1, rank=1)).status_code == 201
    assert (await client.get(f"{URL}/epoch1", params={"rank": 1})).content == rank1
    no_rank0 = await client.get(f"{URL}/epoch1")
    assert no_rank0.status_code == 404 and "ranks stored: 1" in no_rank0.json()["detail"]
    mismatch = await put(client, "epoch1", make_body(6, rank=0, world_size=2), rank=1)
    assert mismatch.status_code == 422 and "metadata.rank is 0" in mismatch.json()["detail"]
    assert (await put(client, "epoch1", make_body(6, rank=0, world_size=2))).status_code == 201
    listed = (await client.get(URL)).json()["snapshots"]
    assert listed[0]["ranks"] == [0, 1]
    assert (listed[0]["world_size"], listed[0]["tags"]) == (2, [])


async def test_the_snapshot_listing_carries_tags_and_world_size(
    client: httpx.AsyncClient, make_snapshot: Callable[..., rngvault.Snapshot]
) -> None:
    first = make_snapshot(1, world_size=4)
    tagged = dataclasses.replace(
        first, metadata=dataclasses.replace(first.metadata, tags=("baseline", "fp32"))
    )
    assert (await put(client, "epoch1", rngvault.encode(tagged))).status_code == 201
    [listed] = (await client.get(URL)).json()["snapshots"]
    assert (listed["tags"], listed["world_size"]) == (["baseline", "fp32"], 4)


async def test_a_bad_rank_query_is_a_422_naming_the_parameter(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    for rank in ("abc", "-1", "2147483648", "1.5", "²", "", "++5", "+-0", "\u0663", "9" * 5000):
        answer = await client.put(
            f"{URL}/epoch1", content=make_body(1), headers=MSGPACK, params={"rank": rank}
        )
        assert answer.status_code == 422, rank
        assert answer.json()["error"] == "invalid_request"
        assert answer.json()["detail"].startswith("query.rank: ")
        assert repr(rank[:40]) in answer.json()["detail"]
        # The GET route checks the same parameter through FastAPI: the same verdict.
        fetched = await client.get(f"{URL}/epoch1", params={"rank": rank})
        assert fetched.status_code == 422, rank
    assert (await put(client, "epoch1", make_body(1), rank=0)).status_code == 201


async def test_listing_runs_and_snapshots_pages_by_cursor(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    for run in ("a", "b", "c"):
        for i in range(3):
            await client.put(
                f"/v1/runs/team/{run}/snapshots/s{i}", content=make_body(i), headers=MSGPACK
            )
    await put(client, "solo", make_body(9))
    runs, cursor = [], None
    for _ in range(10):
        page = await client.get(
            "/v1/runs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        runs += [(r["namespace"], r["run"]) for r in page.json()["runs"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert runs == [("alice", "resnet"), ("team", "a"), ("team", "b"), ("team", "c")]
    team = (await client.get("/v1/runs", params={"namespace": "team"})).json()["runs"]
    assert [r["run"] for r in team] == ["a", "b", "c"] and team[0]["snapshots"] == 3
    first = (await client.get("/v1/runs/team/b/snapshots", params={"limit": 2})).json()
    assert [s["name"] for s in first["snapshots"]] == ["s0", "s1"]
    rest = (
        await client.get("/v1/runs/team/b/snapshots", params={"cursor": first["next_cursor"]})
    ).json()
    assert [s["name"] for s in rest["snapshots"]] == ["s2"] and rest["next_cursor"] is None
    info = rest["snapshots"][0]
    snapshot = rngvault.decode(make_body(2))
    assert info["digest"] == snapshot.digest and info["step"] == 2 and info["epoch"] is None
    assert info["metrics"] == {"loss": 1 / 3} and info["size"] == len(make_body(2))
    assert {"name": "moving", "family": "numpy.bitgen"} in info["generators"]


async def test_delete_snapshot_and_run(client: httpx.AsyncClient, make_body: Body) -> None:
    await put(client, "a", make_body(1))
    await put(client, "b", make_body(2))
    deleted = await client.delete(f"{URL}/a")
    assert deleted.status_code == 200 and deleted.json()["deleted"] == 1
    assert (await client.get(f"{URL}/a")).status_code == 404
    assert (await client.get(f"{URL}/b")).content == make_body(2)
    gone = await client.delete("/v1/runs/alice/resnet")
    assert gone.status_code == 200 and gone.json()["deleted"] == 1
    assert (await client.get(URL)).status_code == 404
    assert (await client.delete("/v1/runs/alice/resnet")).status_code == 404


async def test_bad_bodies_get_4xx_json_saying_what_is_wrong(
    client: httpx.AsyncClient, make_body: Body
):
    not_msgpack = await put(client, "x", b"\xc1\xc1\xc1")
    assert not_msgpack.status_code == 422
    assert not_msgpack.json()["error"] == "invalid_snapshot"
    assert "msgpack" in not_msgpack.json()["detail"]
    wrong_schema = await put(client, "x", msgpack.packb({"format": "rngvault-snapshot"}))
    assert wrong_schema.status_code == 422
    assert "missing top-level field" in wrong_schema.json()["detail"]
    corrupt = bytearray(make_body(1))
    corrupt[-40] ^= 0x01
    assert (await put(client, "x", bytes(corrupt))).status_code == 422
    text = await client.put(
        f"{URL}/x", content=make_body(1), headers={"Content-Type": "text/plain"}
    )
    assert text.status_code == 415 and "application/msgpack" in text.json()["detail"]
    assert (await client.get(URL + "/x")).status_code == 404  # nothing was stored


async def test_bad_names_are_400_naming_the_rule(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    for url in (f"{URL}/-bad", "/v1/runs/al%20ice/resnet/snapshots/x", f"{URL}/{'n' * 129}"):
        answer = await client.put(url, content=make_body(1), headers=MSGPACK)
        assert answer.status_code == 400, url
        assert answer.json()["error"] == "invalid_name"
        assert "[A-Za-z0-9][A-Za-z0-9._-]{0,127}" in answer.json()["detail"]
    assert (await client.get("/v1/runs", params={"namespace": "bad name"})).status_code == 400


async def test_malformed_requests_get_json_errors(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    await put(client, "a", make_body(1))
    cases = [
        (await client.get(f"{URL}/a", headers={"Accept": "text/html"}), 406, "not_acceptable"),
        (await client.get(URL, params={"cursor": "garbage"}), 400, "invalid_cursor"),
        (await client.get(f"{URL}/a", params={"rank": "one"}), 422, "invalid_request"),
        (await client.get(URL, params={"limit": 0}), 422, "invalid_request"),
        (await client.get("/v2/nothing"), 404, "not_found"),
        (await client.post(f"{URL}/a"), 405, "method_not_allowed"),
    ]
    for answer, status, error in cases:
        assert answer.status_code == status
        assert answer.json()["error"] == error and answer.json()["detail"]


async def test_bodies_over_the_limit_get_413_declared_or_streamed(
    client: httpx.AsyncClient, settings, make_body: Body
) -> None:
    big = b"\x00" * (settings.max_body + 1)
    declared = await put(client, "big", big)
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"

    async def chunks():
        for _ in range(17):
            yield b"\x00" * 2**20

    streamed = await client.put(f"{URL}/big", content=chunks(), headers=MSGPACK)
    assert streamed.status_code == 413


async def test_healthz_and_metrics_report_requests_bytes_and_snapshots(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    await put(client, "a", make_body(1))
    await put(client, "a", make_body(2))
    await client.get(f"{URL}/a")
    text = (await client.get("/metrics")).text
    route = "/v1/runs/{namespace}/{run}/snapshots/{name}"
    assert f'rngvault_requests_total{{method="PUT",route="{route}",status="201"}} 1' in text
    assert f'rngvault_requests_total{{method="PUT",route="{route}",status="409"}} 1' in text
    assert f'rngvault_requests_total{{method="GET",route="{route}",status="200"}} 1' in text
    assert "rngvault_snapshots_stored_total 1" in text
    assert "rngvault_snapshots 1" in text
    bytes_in = int(text.split("\nrngvault_request_bytes_total ")[1].split()[0])
    assert bytes_in >= len(make_body(1)) + len(make_body(2))


async def test_openapi_describes_every_route_and_the_msgpack_bodies(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    snapshot = spec["paths"]["/v1/runs/{namespace}/{run}/snapshots/{name}"]
    assert "application/msgpack" in snapshot["put"]["requestBody"]["content"]
    assert set(snapshot["get"]["responses"]["200"]["content"]) == {
        "application/msgpack",
        "application/json",
    }
    assert {"/v1/runs", "/v1/runs/{namespace}/{run}", "/healthz", "/metrics"} <= set(spec["paths"])
    assert "swagger" in (await client.get("/docs")).text.lower()


async def test_a_full_store_answers_507_and_keeps_what_it_had(tmp_path, make_body: Body) -> None:
    path = tmp_path / "tiny.db"
    settings = Settings(db=f"sqlite:///{path}?max_page_count=40", tokens=tmp_path / "none")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        bodies = [make_body(i, shared=i) for i in range(40)]  # nothing shared: each takes room
        statuses = [(await put(client, f"s{i}", b)).status_code for i, b in enumerate(bodies)]
        assert 507 in statuses and set(statuses) <= {201, 507}
        full = await put(client, "more", make_body(99, shared=99))
        assert full.status_code == 507 and full.json()["error"] == "storage_full"
        for i, status in enumerate(statuses):
            got = await client.get(f"{URL}/s{i}")
            assert got.status_code == (200 if status == 201 else 404)
            if status == 201:
                assert got.content == bodies[i]
        assert (await client.get("/healthz")).status_code == 200


class _BrokenStore:
    async def check(self) -> None:
        raise StoreError("the database is unreachable")


async def test_healthz_is_503_when_the_store_does_not_answer(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    app.dependency_overrides[get_store] = lambda: _BrokenStore()
    try:
        answer = await client.get("/healthz")
    finally:
        app.dependency_overrides.clear()
    assert answer.status_code == 503
    assert answer.json() == {
        "error": "storage_unavailable",
        "detail": "the database is unreachable",
    }
