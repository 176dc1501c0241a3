"""GET /v1/seeds on a real server: runs written by real Vaults over HTTP (records and final
metrics), a planted outlier seed; the answer equals ``rngvault.seed_sensitivity`` over the
same runs (through the HTTP store and through a local store holding the same runs); read
scope and namespaces enforced; bad input refused with a clear answer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import rngvault
from rngvault import _seeding
from rngvault.server.tokens import TokenFile
from tests._live import ServerProcess

SEEDS = range(12)
PLANTED = 7


def _accuracy(seed: int) -> float:
    """A metric that depends on the seed's draws only; seed PLANTED is far off."""
    value = 90.0 + float(np.random.default_rng(seed).normal(0.0, 0.25))
    return 70.0 if seed == PLANTED else round(value, 3)


def _sweep(store: Any, run: str, config: dict[str, Any], seeds: range) -> None:
    for seed in seeds:
        rngvault.seed_everything(seed)
        with rngvault.Vault(store, run=run.format(seed=seed), config=config) as vault:
            vault.snapshot("start", step=0)
            vault.snapshot("final", step=10, metrics={"accuracy": _accuracy(seed), "tag": "x"})


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, str], Path]]:
    home = tmp_path_factory.mktemp("seeds-server")
    file = TokenFile(home / "tokens.json")
    tokens = {
        "write": file.create("write", "*")[1],
        "alice": file.create("read", "alice")[1],
        "bob": file.create("read", "bob")[1],
    }
    server = ServerProcess(home, home / "server.db", "--tokens", str(home / "tokens.json"))
    server.start()
    local = home / "local"
    mp = pytest.MonkeyPatch()
    mp.setenv("RNGVAULT_HOME", str(home / "client-home"))
    try:
        write = rngvault.open_store(server.url, token=tokens["write"])
        for store in (write, rngvault.LocalStore(local)):
            _sweep(store, "alice/lr1-{seed}", {"lr": 0.1, "depth": 2}, SEEDS)
            _sweep(store, "alice/lr2-{seed}", {"lr": 0.2, "depth": 2}, range(3))
            _seeding._SEEDED.clear()  # as in a process that never called seed_everything
            with rngvault.Vault(store, run="alice/unseeded", config={"lr": 0.1}) as vault:
                vault.snapshot("final", metrics={"accuracy": 1.0})
        write.close()
        yield server, tokens, local
    finally:
        mp.undo()
        server.stop()


def _get(served: Any, token: str, **params: str) -> httpx.Response:
    server, tokens, _local = served
    return httpx.get(
        server.url + "/v1/seeds",
        params=params,
        headers={"Authorization": f"Bearer {tokens[token]}"},
        timeout=30,
    )


def test_the_answer_equals_the_library_over_http_and_over_the_same_runs_stored_locally(
    served: Any,
) -> None:
    server, tokens, local = served
    answer = _get(served, "alice", pattern="alice/*", metric="accuracy")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    over_http = rngvault.seed_sensitivity(
        rngvault.open_store(server.url, token=tokens["alice"]), "alice/*", metric="accuracy"
    )
    assert body == over_http.to_dict()
    local_report = rngvault.seed_sensitivity(local, "alice/*", metric="accuracy").to_dict()
    assert body == local_report

    first, second = body["groups"]
    assert first["config"] == {"lr": 0.1, "depth": 2} and len(first["runs"]) == len(SEEDS)
    [stats] = first["metrics"]
    assert [o["seed"] for o in stats["outliers"]] == [PLANTED]
    values = [_accuracy(s) for s in SEEDS]
    assert math.isclose(stats["mean"], float(np.mean(values)))
    assert math.isclose(stats["std"], float(np.std(values, ddof=1)))
    assert stats["min_seed"] == PLANTED and stats["min"] == 70.0
    assert second["config"] == {"lr": 0.2, "depth": 2} and second["metrics"][0]["outliers"] == []
    assert body["split_by"] == ["lr"]
    assert body["skipped"] == [
        {"run": "alice/unseeded", "why": "no seed recorded (seed_everything or config 'seed')"}
    ]


def test_at_a_snapshot_name_reads_that_snapshot(served: Any) -> None:
    answer = _get(served, "alice", pattern="alice/lr2-*", metric="accuracy", at="start")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["groups"] == []
    assert {s["why"] for s in body["skipped"]} == {"no metric 'accuracy' in snapshot 'start'"}


def test_every_numeric_metric_without_metric(served: Any) -> None:
    body = _get(served, "alice", pattern="alice/lr1-*").json()
    [group] = body["groups"]
    assert [m["metric"] for m in group["metrics"]] == ["accuracy"]  # "tag" is text


def test_namespaces_the_token_cannot_read_are_not_seen(served: Any) -> None:
    answer = _get(served, "bob", pattern="alice/*")
    assert answer.status_code == 404
    assert "no run matches 'alice/*'" in answer.json()["detail"]
    assert _get(served, "bob", pattern="*/*").status_code == 404


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"pattern": "alice"}, 400, "is not NAMESPACE/RUN"),
        ({"pattern": "alice/x/y"}, 400, "is not NAMESPACE/RUN"),
        ({"pattern": "alice/<script>"}, 400, "is not NAMESPACE/RUN"),
        ({"pattern": "alice/*", "at": "../x"}, 400, "invalid snapshot name"),
        ({}, 422, "pattern"),
        ({"pattern": "alice/nothing-*"}, 404, "no run matches"),
    ],
)
def test_bad_requests_are_answered_clearly(
    served: Any, params: dict[str, str], status: int, words: str
) -> None:
    answer = _get(served, "alice", **params)
    assert answer.status_code == status, answer.text
    assert words in answer.text


def test_no_token_is_refused(served: Any) -> None:
    server, _tokens, _local = served
    answer = httpx.get(server.url + "/v1/seeds", params={"pattern": "alice/*"}, timeout=10)
    assert answer.status_code == 401
