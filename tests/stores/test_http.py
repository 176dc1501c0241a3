"""The HTTP store's client side: the spool, retries, conflicts, the cache, error mapping.

These tests use httpx's MockTransport as the server, to make it fail on cue; the tests in
tests/client/ run the same store against a real server process.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

import rngvault
from rngvault.stores import _transport
from rngvault.stores.http import HttpStore, SpoolWarning
from rngvault.stores.spool import Spool, all_spools

URL = "http://127.0.0.1:9"


def _snapshot(seed: int) -> rngvault.Snapshot:
    snap = rngvault.capture({"a": np.random.default_rng(seed)}, include_globals=False)
    return dataclasses.replace(snap, created=1e9 + seed)


class FakeServer:
    """A server in memory whose answers can be switched: "ok", 503, "timeout", 409."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, int], bytes] = {}
        self.mode = "ok"
        self.puts = 0
        self.gets = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if self.mode == "timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            if self.mode == "503":
                return httpx.Response(503, json={"error": "storage_unavailable", "detail": "db"})
            key = (request.url.path, int(request.url.params.get("rank", 0)))
            if request.method == "PUT":
                self.puts += 1
                body = request.read()
                if body == b"junk":
                    return httpx.Response(
                        422, json={"error": "invalid_snapshot", "detail": "not a snapshot"}
                    )
                if self.mode == "409" or (key in self.stored and self.stored[key] != body):
                    return httpx.Response(
                        409, json={"error": "conflict", "detail": "name taken by other content"}
                    )
                created = key not in self.stored
                self.stored[key] = body
                return httpx.Response(201 if created else 200, json={"created": created})
            self.gets += 1
            if key not in self.stored:
                return httpx.Response(404, json={"error": "not_found", "detail": "no snapshot"})
            return httpx.Response(200, content=self.stored[key])


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def make_store(server: FakeServer, tmp_path: Path) -> Callable[[], HttpStore]:
    def make() -> HttpStore:
        return HttpStore(
            URL,
            transport=httpx.MockTransport(server),
            spool=Spool(URL, tmp_path / "spool"),
            cache=tmp_path / "cache",
        )

    return make


def _put(store: HttpStore, name: str, seed: int) -> bool:
    snap = _snapshot(seed)
    return store.put("alice/exp", name, rngvault.encode(snap), snap)


def _path(name: str) -> tuple[str, int]:
    return (f"/v1/runs/alice/exp/snapshots/{name}", 0)


def test_put_reaches_the_server_and_retries_are_safe(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A healthy server gets the bytes; the same put again answers 'already there'."""
    store = make_store()
    assert _put(store, "s0", 0) is True
    assert _put(store, "s0", 0) is False
    assert server.stored[_path("s0")] == rngvault.encode(_snapshot(0))


@pytest.mark.parametrize("failure", ["503", "timeout"])
def test_an_unavailable_server_spools_then_catches_up(
    failure: str, server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """5xx or timeouts: snapshots go to the spool (one warning), later puts skip the
    server while it is away, and everything is sent, in order, once it answers."""
    store = make_store()
    server.mode = failure
    with pytest.warns(SpoolWarning, match="kept in"):
        for i in range(5):
            assert _put(store, f"s{i}", i) is True
    assert len(store.spool) == 5
    assert server.puts == 0  # away: the later puts did not wait for another timeout
    server.mode = "ok"
    assert store.flush() == 0
    assert len(store.spool) == 0
    for i in range(5):
        assert server.stored[_path(f"s{i}")] == rngvault.encode(_snapshot(i))


def test_retries_never_draw_from_the_users_random_module(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """The retry jitter comes from a generator of rngvault's own: spooling and backing off
    leave the ``random`` module's stream (the user's) where it was."""
    random.seed(1234)
    before = random.getstate()
    store = make_store()
    server.mode = "503"
    with pytest.warns(SpoolWarning):
        for i in range(3):
            _put(store, f"s{i}", i)
    assert store.flush() == 3
    assert random.getstate() == before
    store.close()


def test_a_new_store_sends_what_an_earlier_process_spooled(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """The spool outlives its process: a new store for the same URL sends it by itself."""
    first = make_store()
    server.mode = "503"
    with pytest.warns(SpoolWarning):
        _put(first, "left-behind", 1)
    first.close()  # this "process" ends before the server is back; the spool stays
    server.mode = "ok"
    make_store()  # the next process
    deadline = time.monotonic() + 20
    while _path("left-behind") not in server.stored and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stored[_path("left-behind")] == rngvault.encode(_snapshot(1))


def test_conflict_is_not_retried_and_is_kept_for_the_user(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """409: ConflictError with the server's words; the snapshot waits in conflicts/."""
    store = make_store()
    _put(store, "taken", 1)
    with pytest.raises(rngvault.ConflictError, match="name taken by other content"):
        _put(store, "taken", 2)
    [kept] = store.spool.conflicting()
    assert kept.name == "taken" and kept.data == rngvault.encode(_snapshot(2))
    assert len(store.spool) == 0  # not in the retry queue
    puts = server.puts
    assert store.flush() == 0 and server.puts == puts


def test_spooled_conflict_is_set_aside_loudly(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A spooled snapshot the server then refuses moves to conflicts/ with a warning."""
    store = make_store()
    server.stored[_path("s")] = b"other"
    server.mode = "503"
    with pytest.warns(SpoolWarning):
        _put(store, "s", 3)
    server.mode = "ok"
    with pytest.warns(SpoolWarning, match="refused spooled snapshot alice/exp/s"):
        store.flush()
    assert [e.name for e in store.spool.conflicting()] == ["s"]


def test_a_full_spool_says_so(
    server: FakeServer, make_store: Callable[[], HttpStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past RNGVAULT_SPOOL_MAX_BYTES the put fails with a message naming the cap."""
    monkeypatch.setenv("RNGVAULT_SPOOL_MAX_BYTES", "10")
    store = make_store()
    server.mode = "503"
    full = pytest.raises(rngvault.StoreError, match="spool .* is full.*RNGVAULT_SPOOL_MAX_BYTES")
    with full, warnings.catch_warnings():
        warnings.simplefilter("ignore", SpoolWarning)
        _put(store, "big", 1)


def test_fetched_snapshots_are_cached_by_digest(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A get that names the states digest is served from the local cache the second time;
    a get by name alone always asks the server, so a re-created name is never stale."""
    store = make_store()
    _put(store, "s", 4)
    digest = _snapshot(4).digest
    assert store.get("alice/exp", "s", digest=digest) == rngvault.encode(_snapshot(4))
    assert make_store().get("alice/exp", "s", digest=digest) == rngvault.encode(_snapshot(4))
    assert server.gets == 1
    server.stored[_path("s")] = rngvault.encode(_snapshot(5))  # deleted and stored again
    assert make_store().get("alice/exp", "s") == rngvault.encode(_snapshot(5))
    assert server.gets == 2


def test_spools_are_listed_by_server(
    server: FakeServer, make_store: Callable[[], HttpStore], tmp_path: Path
) -> None:
    """all_spools finds each server's spool by its URL."""
    store = make_store()
    server.mode = "503"
    with pytest.warns(SpoolWarning):
        _put(store, "s", 5)
    [spool] = all_spools(tmp_path / "spool")
    assert spool.url == URL and len(spool) == 1


def _httpx_exception_types() -> list[type[Exception]]:
    return [
        obj
        for _name, obj in inspect.getmembers(httpx)
        if inspect.isclass(obj) and issubclass(obj, Exception)
    ]


def test_every_httpx_exception_type_is_mapped() -> None:
    """Each exception type httpx exports has its own entry in the one mapping table."""
    unmapped = [t.__name__ for t in _httpx_exception_types() if t not in _transport.MAPPING]
    assert not unmapped, f"map these httpx exceptions in rngvault/stores/_transport.py: {unmapped}"


@pytest.mark.parametrize("kind", _httpx_exception_types(), ids=lambda t: t.__name__)
def test_httpx_errors_become_rngvault_errors(kind: type[Exception]) -> None:
    """from_httpx turns each httpx error into an RngVaultError naming the server."""
    if issubclass(kind, httpx.HTTPStatusError):
        exc = kind("boom", request=httpx.Request("GET", URL), response=httpx.Response(500))
    elif issubclass(kind, httpx.StreamError) and kind is not httpx.StreamError:
        exc = kind()
    else:
        exc = kind("boom")
    mapped = _transport.from_httpx(exc, URL)
    assert isinstance(mapped, rngvault.RngVaultError)
    assert URL in str(mapped) and kind.__name__ in str(mapped)


def test_server_error_bodies_are_shown_as_they_are() -> None:
    """A JSON error answer's code and detail reach the user unchanged."""
    request = httpx.Request("PUT", URL + "/v1/runs/a/b/snapshots/c")
    response = httpx.Response(
        422, json={"error": "invalid_snapshot", "detail": "field 'pos': 700"}, request=request
    )
    error = _transport.from_response(response)
    assert isinstance(error, rngvault.DecodeError)
    assert "invalid_snapshot: field 'pos': 700" in str(error)
    for status, kind in [
        (401, rngvault.AuthError),
        (404, rngvault.NotFoundError),
        (503, rngvault.TransportError),
        (409, rngvault.ConflictError),
    ]:
        got = _transport.from_response(httpx.Response(status, text="x", request=request))
        assert isinstance(got, kind)


def test_a_refused_spool_entry_never_blocks_the_others(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A spooled entry the server refuses (422) is set aside with a warning; the snapshots
    after it, and new ones, still reach the server."""
    store = make_store()
    store.spool.add("alice/exp", "bad", 0, b"junk")
    snap = _snapshot(7)
    store.spool.add("alice/exp", "later", 0, rngvault.encode(snap))
    with pytest.warns(SpoolWarning, match="refused spooled snapshot alice/exp/bad"):
        assert _put(store, "new", 8) is True
    assert server.stored[_path("later")] == rngvault.encode(snap)
    assert server.stored[_path("new")] == rngvault.encode(_snapshot(8))
    assert [e.name for e in store.spool.conflicting()] == ["bad"] and len(store.spool) == 0


def test_an_unreadable_spool_file_is_moved_aside(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A damaged spool file is moved to conflicts/ with a warning, not an endless error."""
    store = make_store()
    store.spool.add("alice/exp", "ok", 0, rngvault.encode(_snapshot(9)))
    damaged = store.spool.directory / "00000000000000000000-1-1.snap"
    damaged.write_bytes(b"\xc1 not msgpack")
    with pytest.warns(UserWarning, match="unreadable spool file"):
        assert store.flush() == 0
    assert server.stored[_path("ok")] == rngvault.encode(_snapshot(9))
    assert (store.spool.conflicts / (damaged.name + ".unreadable")).exists()
