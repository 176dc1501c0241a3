"""The HTTP store's client side: the spool, retries, conflicts, the cache, error mapping.

These tests use httpx's MockTransport as the server, to make it fail on cue; the tests in
tests/client/ run the same store against a real server process.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import re
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
from rngvault.stores.spool import MAX_ATTEMPTS, Spool, all_spools
from tests.client._stub import listing_item

URL = "http://127.0.0.1:9"


def _snapshot(seed: int) -> rngvault.Snapshot:
    snap = rngvault.capture({"a": np.random.default_rng(seed)}, include_globals=False)
    return dataclasses.replace(snap, created=1e9 + seed)


class FakeServer:
    """A server in memory whose answers can be switched: "ok", 503, "timeout", 409; PUTs of
    the names in ``failing`` get that status while the rest (and /healthz) work."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, int], bytes] = {}
        self.mode = "ok"
        self.failing: dict[str, int] = {}
        self.requests: list[str] = []
        self.puts = 0
        self.gets = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request.url.path)
            if self.mode == "timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            if self.mode == "503":
                return httpx.Response(503, json={"error": "storage_unavailable", "detail": "db"})
            if request.url.path == "/healthz":
                return httpx.Response(200, json={"status": "ok"})
            if request.url.path == "/v1/runs":  # a Vault's check at start
                return httpx.Response(200, json={"runs": [], "next_cursor": None})
            key = (request.url.path, int(request.url.params.get("rank", 0)))
            if request.method == "PUT":
                self.puts += 1
                status = self.failing.get(request.url.path.rsplit("/", 1)[-1])
                if status is not None:
                    return httpx.Response(status, json={"error": "boom", "detail": f"{status}!"})
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


# -- names, the fetch cache ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "../../v1/runs", "a/b", "", ".hidden", "x" * 129])
def test_get_checks_the_name_before_any_request(
    name: str, server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A name that breaks the rules is an InvalidNameError naming it; no URL is built."""
    with pytest.raises(rngvault.InvalidNameError, match=re.escape(repr(name))):
        make_store().get("alice/exp", name)
    assert server.requests == []


def test_the_fetch_cache_keeps_only_the_snapshot_asked_for(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A body that is not the snapshot the digest names (garbage, or another snapshot) is
    returned for the caller to refuse but never cached: once the server serves the right
    one, the next fetch gets it; from then on the cache answers."""
    store = make_store()
    good = _snapshot(10)
    for wrong in (b"\x93garbage", rngvault.encode(_snapshot(11))):
        server.stored[_path("s")] = wrong
        assert store.get("alice/exp", "s", digest=good.digest) == wrong
    server.stored[_path("s")] = rngvault.encode(good)
    assert store.get("alice/exp", "s", digest=good.digest) == rngvault.encode(good)
    gets = server.gets
    assert make_store().get("alice/exp", "s", digest=good.digest) == rngvault.encode(good)
    assert server.gets == gets


def test_a_restore_by_reference_works_once_the_server_is_fixed(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """Restore by ref through a Vault: refused while the server serves the wrong bytes,
    restored exactly after it is fixed (no stale cache in between)."""
    good = _snapshot(12)
    ref = rngvault.SnapshotRef("alice/exp", "s", good.digest, 0)
    vault = rngvault.Vault(make_store(), run="bob/repro", on_error="raise")
    gen = vault.track(np.random.default_rng(99), "a")
    server.stored[_path("s")] = rngvault.encode(_snapshot(13))
    with pytest.raises(rngvault.RestoreError, match="not the snapshot the reference"):
        vault.restore(ref)
    server.stored[_path("s")] = rngvault.encode(good)
    vault.restore(ref)
    assert gen.bit_generator.state == np.random.default_rng(12).bit_generator.state


# -- a snapshot the server fails on --------------------------------------------------------


def _spool_entries(store: HttpStore) -> dict[str, int]:
    return {e.name: e.attempts for e in store.spool.entries()}


def test_a_snapshot_the_server_fails_on_is_set_aside_after_max_attempts(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """500 for one spooled snapshot while /healthz answers: the ones after it are sent at
    once; it is charged once per pass and, at MAX_ATTEMPTS, moved to failed/ with the
    server's error and a warning; new snapshots meanwhile go straight to the server."""
    store = make_store()
    store.spool.add("alice/exp", "poison", 0, rngvault.encode(_snapshot(20)))
    store.spool.add("alice/exp", "after", 0, rngvault.encode(_snapshot(21)))
    server.failing["poison"] = 500
    assert store.flush() == 1
    assert _path("after") in server.stored and _spool_entries(store) == {"poison": 1}
    assert _put(store, "new", 22) is True and _path("new") in server.stored
    for attempt in range(2, MAX_ATTEMPTS):
        assert store.flush() == 1 and _spool_entries(store) == {"poison": attempt}
    with pytest.warns(SpoolWarning, match="failed to take spooled snapshot alice/exp/poison"):
        assert store.flush() == 0
    [failed] = store.spool.failures()
    assert (failed.name, failed.attempts) == ("poison", MAX_ATTEMPTS)
    assert "500" in failed.error and "500!" in failed.error
    assert failed.path.parent == store.spool.failed and len(store.spool) == 0
    assert failed.data == rngvault.encode(_snapshot(20))  # nothing lost


def test_failed_snapshots_can_be_sent_again(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """retry_failed puts them back with a fresh count; once the server takes them, sent."""
    store = make_store()
    store.spool.add("alice/exp", "poison", 0, rngvault.encode(_snapshot(23)))
    server.failing["poison"] = 500
    with pytest.warns(SpoolWarning):
        while not store.spool.failures():
            store.flush()
    del server.failing["poison"]
    [moved] = store.spool.retry_failed()
    assert moved.name == "poison" and _spool_entries(store) == {"poison": 0}
    assert store.flush() == 0 and store.spool.failures() == []
    assert server.stored[_path("poison")] == rngvault.encode(_snapshot(23))


@pytest.mark.parametrize("failure", ["503", "timeout", "507", "429"])
def test_an_outage_or_a_full_server_blames_no_snapshot(
    failure: str, server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """When /healthz fails too (503, timeouts) or the answer is about the whole server
    (507 storage full, 429), no snapshot is charged however often the spool is retried,
    and the pass stops at the first."""
    store = make_store()
    for i in range(3):
        store.spool.add("alice/exp", f"s{i}", 0, rngvault.encode(_snapshot(30 + i)))
    if failure in ("507", "429"):
        server.failing.update({f"s{i}": int(failure) for i in range(3)})
    else:
        server.mode = failure
    for _ in range(MAX_ATTEMPTS + 2):
        assert store.flush() == 3
    assert _spool_entries(store) == {"s0": 0, "s1": 0, "s2": 0}
    assert store.spool.failures() == [] and server.puts <= MAX_ATTEMPTS + 2
    server.mode, server.failing = "ok", {}
    assert store.flush() == 0 and len(server.stored) == 3


def test_a_spooled_snapshot_with_a_bad_name_is_set_aside(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A planted spool file naming "../x" never becomes a URL: it moves to conflicts/."""
    store = make_store()
    store.spool.add("alice/exp", "../x", 0, rngvault.encode(_snapshot(40)))
    with pytest.warns(SpoolWarning, match="invalid snapshot name '../x'"):
        assert store.flush() == 0
    assert [e.name for e in store.spool.conflicting()] == ["../x"] and server.requests == []


# -- listings from a server that lies -------------------------------------------------------


def _listing(items: object, cursor: object = None) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"namespace": "alice", "run": "exp", "snapshots": items, "next_cursor": cursor}
        return httpx.Response(200, json=body)

    return answer


def _item(**changes: object) -> dict[str, object]:
    return {**listing_item("s"), **changes}


@pytest.mark.parametrize(
    ("items", "cursor", "message"),
    [
        ([_item(name="../../x")], None, "invalid snapshot name '../../x'"),
        ([_item(name="/etc/x")], None, "invalid snapshot name '/etc/x'"),
        ([_item(ranks=["../x"])], None, "'ranks' must be a list of ranks"),
        ([_item(ranks=[-1])], None, "'ranks' must be a list of ranks"),
        ([_item(size="big")], None, "'size' must be a size in bytes"),
        ([_item(generators=[{"name": 1}])], None, "'generators' must be a map"),
        (["not a map"], None, "must be a map"),
        ({"a": 1}, None, "no list 'snapshots'"),
        ([_item()], "again", "next_cursor does not move on"),
    ],
)
def test_a_listing_that_breaks_the_rules_is_a_one_line_error(
    items: object, cursor: object, message: str, tmp_path: Path
) -> None:
    """Names, ranks and fields of a listing are checked before they are used: a clear
    StoreError or InvalidNameError naming the bad value, never a KeyError or TypeError."""
    store = HttpStore(URL, transport=httpx.MockTransport(_listing(items, cursor)))
    errors = (rngvault.StoreError, rngvault.InvalidNameError)
    with pytest.raises(errors, match=re.escape(message)):
        store.snapshots("alice/exp")


def test_a_listing_in_the_servers_json_reads_back() -> None:
    """The server's JSON rendering (big integers and NaN as strings) becomes numbers."""
    item = _item(step=str(2**70), epoch="3", created="NaN", ranks=[0, 1])
    [info] = HttpStore(URL, transport=httpx.MockTransport(_listing([item]))).snapshots("a/b")
    assert (info.step, info.epoch, info.world_size, info.ranks) == (2**70, 3, 2, (0, 1))
    assert info.created != info.created  # NaN


def test_a_409_for_the_same_snapshot_is_already_stored(
    server: FakeServer, make_store: Callable[[], HttpStore]
) -> None:
    """A server that compares bytes answers 409 to the same snapshot taken again (another
    `created`): the client compares states and user metadata, and counts it as stored;
    other content stays a conflict, kept in conflicts/."""
    store = make_store()
    snap = _snapshot(1)
    assert store.put("alice/exp", "s", rngvault.encode(snap), snap) is True
    again = dataclasses.replace(snap, created=2e9)
    assert store.put("alice/exp", "s", rngvault.encode(again), again) is False
    assert server.stored[_path("s")] == rngvault.encode(snap) and store.spool.conflicting() == []
    other = dataclasses.replace(snap, metadata=rngvault.Metadata(step=1))
    with pytest.raises(rngvault.ConflictError):
        store.put("alice/exp", "s", rngvault.encode(other), other)
    assert [e.name for e in store.spool.conflicting()] == ["s"]
