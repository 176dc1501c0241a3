"""Slow and greedy clients: connection cap, request-head and body timeouts, bounded logs,
and CPU-heavy answers off the event loop. Real ``rngvault serve`` processes on loopback."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import rngvault
from rngvault import cli
from rngvault.server.serving import FILE_RESERVE, RepeatLimit, connection_cap
from tests._live import ServerProcess

Body = Callable[..., bytes]
MSGPACK = {"Content-Type": "application/msgpack"}


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None if it stayed open that long)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while True:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
    except TimeoutError:
        return None
    except ConnectionResetError:
        return time.monotonic() - start


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


@pytest.fixture
def crowded(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server limited to 256 open files (the cap must stay below it), with a head timeout
    long enough that only the cap can keep it answering."""
    server = ServerProcess(tmp_path, tmp_path / "c.db", "--header-timeout", "60", files=256)
    try:
        yield server.start()
    finally:
        server.stop()


def test_hundreds_of_idle_connections_do_not_lock_out_requests(
    crowded: ServerProcess, make_body: Body
) -> None:
    idle = []
    try:
        for i in range(400):  # more than the server's whole file limit
            sock = _connect(crowded.url)
            if i % 2:
                sock.sendall(b"PUT /v1/runs/a/b/snapshots/c HTTP/1.1\r\nHost: loc")  # half-sent
            idle.append(sock)
        with httpx.Client(base_url=crowded.url, timeout=5) as client:
            for i in range(3):
                start = time.monotonic()
                assert client.get("/healthz").status_code == 200
                put = client.put(
                    f"/v1/runs/alice/r/snapshots/s{i}", content=make_body(i), headers=MSGPACK
                )
                assert put.status_code == 201
                assert time.monotonic() - start < 1.0
    finally:
        for sock in idle:
            sock.close()
    log = crowded.log()
    assert len(log) < 20_000, log[-2000:]
    assert "Too many open files" not in log


def test_connection_cap_stays_below_the_file_limit() -> None:
    assert connection_cap(1000, None) == 1000
    assert connection_cap(1000, 65536) == 1000
    assert connection_cap(1000, 256) <= 256 - FILE_RESERVE
    assert connection_cap(10, 256) == 10
    assert 1 <= connection_cap(1000, 20) < 20


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("impatient")
    server = ServerProcess(home, home / "i.db", "--header-timeout", "1", "--keep-alive", "1")
    try:
        yield server.start()
    finally:
        server.stop()


def test_a_connection_that_sends_nothing_is_closed(impatient: ServerProcess) -> None:
    with _connect(impatient.url) as sock:
        closed = _closed_within(sock, 10)
    assert closed is not None and 0.8 < closed < 4


def test_request_headers_sent_a_byte_at_a_time_are_cut_off(impatient: ServerProcess) -> None:
    with _connect(impatient.url) as sock:
        start = time.monotonic()
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)  # well inside any idle timeout, but the head never ends
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - start
        assert elapsed < 4, "the server kept reading a head for longer than its timeout"
        assert _closed_within(sock, 5) is not None


def test_a_body_that_stops_arriving_is_closed(impatient: ServerProcess) -> None:
    with _connect(impatient.url) as sock:
        sock.sendall(
            b"PUT /v1/runs/a/b/snapshots/c HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/msgpack\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
        )
        closed = _closed_within(sock, 10)
    assert closed is not None and closed < 4


def test_a_body_that_trickles_in_is_closed(impatient: ServerProcess) -> None:
    """Bytes keep coming, never a second apart, but far slower than MIN_BODY_RATE."""
    with _connect(impatient.url) as sock:
        sock.sendall(
            b"PUT /v1/runs/a/b/snapshots/c HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/msgpack\r\nContent-Length: 1000000\r\n\r\n"
        )
        start = time.monotonic()
        try:
            while time.monotonic() - start < 10:
                sock.sendall(b"x" * 100)
                time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - start
        closed = _closed_within(sock, 5)
    assert closed is not None
    assert elapsed < 5, f"the trickling body was read for {elapsed:.1f} s"


def test_a_large_body_at_a_normal_pace_is_stored(impatient: ServerProcess, make_body: Body) -> None:
    body = make_body(5)
    with _connect(impatient.url) as sock:
        sock.sendall(
            b"PUT /v1/runs/alice/paced/snapshots/s HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/msgpack\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for i in range(0, len(body), 4096):  # about 2 s for 20 KB, well above the minimum rate
            sock.sendall(body[i : i + 4096])
            time.sleep(0.3)
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 201")


def test_keep_alive_connections_serve_several_requests(impatient: ServerProcess) -> None:
    with httpx.Client(base_url=impatient.url, timeout=5) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.5)  # each pause is inside the keep-alive and head timeouts


def test_repeated_log_lines_are_counted_not_written() -> None:
    logger = logging.getLogger("rngvault.test-repeat")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    limit = RepeatLimit(burst=5, window=0.3)
    logger.addHandler(handler)
    logger.addFilter(limit)
    logger.propagate = False
    try:
        for i in range(1000):
            logger.error("accept failed: %s", i)
        logger.error("another message")
        assert len(records) == 6
        time.sleep(0.35)
        logger.error("accept failed: %s", "again")
        assert records[-1].getMessage() == (
            "accept failed: again (995 more like this were not logged in 0.3 s)"
        )
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(limit)


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--max-connections", "0", "max_connections"),
        ("--header-timeout", "soon", "header_timeout"),
        ("--keep-alive", "inf", "keep_alive"),
        ("--allowed-hosts", "a host", "allowed host"),
    ],
)
def test_bad_limits_are_one_line_errors(
    option: str, value: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", option, value]) == 1
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1


PROBE = r"""
import sys, time, httpx
start, worst = time.perf_counter(), 0.0
with httpx.Client(base_url=sys.argv[1], timeout=30) as client:
    while time.perf_counter() - start < float(sys.argv[2]):
        t = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        worst = max(worst, time.perf_counter() - t)
print(worst)
"""


@pytest.fixture(scope="module")
def large_body() -> bytes:
    """A 13 MB snapshot: 1,024 torch generators and 120,000 metrics (under the 16 MiB limit)."""
    torch = pytest.importorskip("torch", reason="the large snapshot is made of torch generators")
    generators = {f"g{i}": torch.Generator().manual_seed(i) for i in range(1024)}
    metrics: dict[str, float | int | str | bool] = {f"metric-{i}": "x" * 60 for i in range(120_000)}
    snapshot = rngvault.capture(
        generators, include_globals=False, metadata=rngvault.Metadata(metrics=metrics)
    )
    return rngvault.encode(snapshot)


def test_healthz_answers_while_a_large_snapshot_renders_as_json(
    tmp_path: Path, large_body: bytes
) -> None:
    server = ServerProcess(tmp_path, tmp_path / "big.db").start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            path = "/v1/runs/alice/big/snapshots/s"
            assert client.put(path, content=large_body, headers=MSGPACK).status_code == 201
            for _ in range(2):  # the first render also starts the worker process
                probe = subprocess.Popen(
                    [sys.executable, "-c", PROBE, server.url, "3"], stdout=subprocess.PIPE
                )
                time.sleep(0.5)
                answer = client.get(path, headers={"Accept": "application/json"})
                worst = float(probe.communicate(timeout=60)[0])
                assert answer.status_code == 200
                assert len(answer.json()["generators"]) == 1024
                assert worst < 0.1, f"/healthz took {worst * 1000:.0f} ms during the render"
            some = client.get(path, params={"generators": "g1,g7"})
            assert some.status_code == 200
            assert list(rngvault.decode(some.content).states) == ["g1", "g7"]
            missing = client.get(path, params={"generators": "g1,nope"})
            assert missing.status_code == 404
            assert "'nope'" in missing.json()["detail"]
    finally:
        server.stop()


def test_workers_share_the_port_with_the_same_limits(tmp_path: Path, make_body: Body) -> None:
    server = ServerProcess(
        tmp_path, tmp_path / "w.db", "--workers", "2", "--header-timeout", "1"
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(4):
                path = f"/v1/runs/alice/r/snapshots/s{i}"
                assert client.put(path, content=make_body(i), headers=MSGPACK).status_code == 201
                assert client.get(path).content == make_body(i)
            # the open-mode rules hold in every worker
            assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 421
        with _connect(server.url) as sock:
            closed = _closed_within(sock, 10)
        assert closed is not None and closed < 4
    finally:
        server.stop()
    assert "2 workers" in server.log()
