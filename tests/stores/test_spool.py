"""The spool's buckets and the functions that manage them: a refused token loses nothing.

401/403 keep snapshots whole in ``refused/``; ``flush`` counts them as not sent;
``list_entries``, ``retry`` and ``drop`` list, resend (with a token that works) and delete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

import rngvault
from rngvault._writer import StoreWarning
from rngvault.server.tokens import TokenFile
from rngvault.stores.http import HttpStore, SpoolWarning
from rngvault.stores.spool import Spool, drop, list_entries, retry

URL = "http://127.0.0.1:9"


def _snapshot(seed: int) -> rngvault.Snapshot:
    snap = rngvault.capture({"a": np.random.default_rng(seed)}, include_globals=False)
    return dataclasses.replace(snap, created=1e9 + seed)


class Gate:
    """A server in memory that takes PUTs only with ``Bearer good`` (401 without a token,
    403 with another); ``/healthz`` always answers."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        auth = request.headers.get("authorization")
        if auth != "Bearer good":
            status = 401 if auth is None else 403
            return httpx.Response(status, json={"error": "unauthorized", "detail": "bad token"})
        if request.method == "PUT":
            self.stored[request.url.path] = request.read()
            return httpx.Response(201, json={"created": True})
        return httpx.Response(200, json={"runs": [], "next_cursor": None})


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def make_store(gate: Gate, tmp_path: Path) -> Callable[[str | None], HttpStore]:
    def make(token: str | None) -> HttpStore:
        return HttpStore(
            URL,
            token=token,
            transport=httpx.MockTransport(gate),
            spool=Spool(URL, tmp_path / "spool"),
            cache=tmp_path / "cache",
        )

    return make


def _put(store: HttpStore, name: str, seed: int) -> bool:
    snap = _snapshot(seed)
    return store.put("alice/exp", name, rngvault.encode(snap), snap)


@pytest.mark.parametrize("token", [None, "garbage"], ids=["no-token", "wrong-token"])
def test_a_refused_token_keeps_the_snapshot_retryable(
    make_store: Callable[[str | None], HttpStore], token: str | None
) -> None:
    """401/403: AuthError saying what to do; the snapshot waits in refused/ (not
    conflicts/), and flush() counts it as not sent."""
    store = make_store(token)
    with pytest.raises(rngvault.AuthError, match="set RNGVAULT_TOKEN or pass token="):
        _put(store, "s", 1)
    [kept] = store.spool.refusals()
    assert (kept.name, kept.bucket) == ("s", "refused")
    assert kept.data == rngvault.encode(_snapshot(1)) and "bad token" in kept.error
    assert store.spool.conflicting() == [] and len(store.spool) == 0
    assert store.flush() == 1


def test_spooled_snapshots_refused_for_the_token_move_to_refused(
    make_store: Callable[[str | None], HttpStore], tmp_path: Path
) -> None:
    """Snapshots that waited for a server that was away, then refused for the token, move
    to refused/ with one warning, never to conflicts/."""
    store = make_store("garbage")
    for i in range(3):
        store.spool.add("alice/exp", f"s{i}", 0, rngvault.encode(_snapshot(i)))
    with pytest.warns(SpoolWarning, match="refused the token for 3 spooled snapshot") as caught:
        assert store.flush() == 3
    assert len(caught) == 1
    assert [e.name for e in store.spool.refusals()] == ["s0", "s1", "s2"]
    assert store.spool.conflicting() == [] and len(store.spool) == 0


def test_retry_sends_the_refused_ones_with_a_token_that_works(
    make_store: Callable[[str | None], HttpStore], gate: Gate, tmp_path: Path
) -> None:
    """Once the token is fixed, the refused snapshots are moved back and sent; flush() of a
    store then counts nothing left."""
    store = make_store("garbage")
    for i in range(2):
        with pytest.raises(rngvault.AuthError):
            _put(store, f"s{i}", i)
    fixed = make_store("good")
    assert fixed.flush() == 2  # refused ones wait for retry, whatever the token
    moved = fixed.spool.move_back("refused")
    assert len(moved) == 2
    assert fixed.flush() == 0
    assert gate.stored == {
        f"/v1/runs/alice/exp/snapshots/s{i}": rngvault.encode(_snapshot(i)) for i in range(2)
    }


def test_list_entries_names_every_bucket(tmp_path: Path) -> None:
    """list_entries sees each bucket of one server's spool, or of every server's."""
    root = tmp_path / "spool"
    first, second = Spool(URL, root), Spool("http://127.0.0.1:10", root)
    data = rngvault.encode(_snapshot(0))
    first.add("alice/exp", "w", 0, data)
    first.add("alice/exp", "r", 0, data, bucket="refused", error="401")
    first.add("alice/exp", "c", 0, data, conflict=True)
    first.add("alice/exp", "f", 0, data, bucket="failed")
    second.add("bob/exp", "w2", 0, data)
    entries = list_entries(URL, root=root)
    assert {(e.name, e.bucket) for e in entries} == {
        ("w", "waiting"),
        ("r", "refused"),
        ("c", "conflict"),
        ("f", "failed"),
    }
    assert [e.name for e in list_entries(URL, bucket="refused", root=root)] == ["r"]
    assert {e.name for e in list_entries(root=root)} == {"w", "r", "c", "f", "w2"}
    with pytest.raises(rngvault.StoreError, match="unknown spool bucket 'lost'"):
        list_entries(URL, bucket="lost", root=root)  # type: ignore[arg-type]


def test_drop_deletes_what_it_is_given_and_nothing_else(tmp_path: Path) -> None:
    """drop by bucket or by entries; neither is an error, not a drop of everything."""
    root = tmp_path / "spool"
    spool = Spool(URL, root)
    data = rngvault.encode(_snapshot(0))
    spool.add("alice/exp", "c1", 0, data, conflict=True)
    spool.add("alice/exp", "c2", 0, data, conflict=True)
    spool.add("alice/exp", "w", 0, data)
    [c1, _c2] = spool.conflicting()
    assert drop(URL, entries=[c1], root=root) == 1
    assert [e.name for e in spool.conflicting()] == ["c2"]
    assert drop(URL, bucket="conflict", root=root) == 1
    assert spool.conflicting() == [] and [e.name for e in spool.entries()] == ["w"]
    with pytest.raises(rngvault.StoreError, match="either the entries or the bucket"):
        drop(URL, root=root)


def test_retry_against_a_real_server_with_tokens(
    server_factory: Callable[..., object], tmp_path: Path
) -> None:
    """A Vault with a wrong token: nothing is lost; flush() is False while the snapshots
    are refused; spool.retry with the right token puts them on the server."""
    tokens = tmp_path / "tokens.json"
    _record, good = TokenFile(tokens).create("write", "alice")
    server = server_factory("--tokens", str(tokens))
    url = server.url  # type: ignore[attr-defined]
    with pytest.warns(StoreWarning, match="set RNGVAULT_TOKEN or pass token="):
        vault = rngvault.Vault(url, run="alice/exp", token="garbage")
        gen = vault.track(np.random.default_rng(0), "g")
        for i in range(3):
            vault.snapshot(f"s{i}", step=i)
            gen.random()
        assert vault.flush(timeout=30) is False
    assert [e.bucket for e in list_entries(url)] == ["refused"] * 3
    outcome = retry(url, token=good)
    assert (outcome.moved, outcome.left) == (3, 0)
    assert list_entries(url) == []
    reader = HttpStore(url, token=good)
    assert [i.name for i in reader.snapshots("alice/exp")] == ["s0", "s1", "s2"]
    vault.close()
