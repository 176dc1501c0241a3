"""How ``rngvault serve`` runs uvicorn: connection limits and timeouts, a file limit that
fits them, and logs that a flood of bad connections cannot fill.

uvicorn closes a keep-alive connection that stays idle, but not one that never sends a
request, nor one that sends its headers or body a byte at a time, and it accepts
connections until the process runs out of file descriptors, after which every accept
fails. ``guarded_protocol()`` is uvicorn's HTTP protocol (httptools, else h11) with a
guard, so that:

- a connection must send a whole request head within ``header_timeout`` seconds of
  connecting (for its first request) or of the request's first byte (for later ones),
  else it is closed;
- a request body that stops arriving for ``header_timeout`` seconds is closed, and so is
  one that, past its first ``header_timeout`` seconds, has come in slower than
  ``MIN_BODY_RATE`` on average (a body sent a byte at a time holds a connection as long
  as an idle one would);
- at most ``cap`` connections are open: a new connection past the cap closes the open
  connection that is waiting for a request and has been quiet longest (the new one itself
  when every other connection is busy answering), so idle connections cannot lock out
  real requests.

The cap stays below the process's file limit (``connection_cap``), which ``run`` first
raises to its hard limit. ``RepeatLimit`` keeps a log line that repeats (an accept error,
say) to ``burst`` copies per window and counts the rest.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from rngvault.server.settings import Settings

FILE_RESERVE = 64  # descriptors kept for the database, its readers, logs and threads
SWEEP = 0.5  # seconds between looks at connections' deadlines
MIN_BODY_RATE = 8 * 1024  # bytes per second a request body averages, at least (16 MiB: 34 min)
LIMITED_LOGGERS = ("asyncio", "uvicorn.error", "rngvault.server")

log = logging.getLogger("rngvault.server")


def raise_file_limit() -> int | None:
    """Raise the soft limit on open files to the hard one; returns the soft limit now in
    force (None where the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536) if soft != resource.RLIM_INFINITY else 65536
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return None if soft == resource.RLIM_INFINITY else int(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return int(hard)
    except (ValueError, OSError):
        return int(soft)


def connection_cap(max_connections: int, file_limit: int | None) -> int:
    """``max_connections``, lowered to leave ``FILE_RESERVE`` descriptors free."""
    if file_limit is None:
        return max_connections
    return max(1, min(max_connections, file_limit - FILE_RESERVE, file_limit // 2 or 1))


_limits: dict[str, float] = {}


def configure(cap: int, header_timeout: float) -> None:
    """Set the limits the guarded protocols enforce in this process."""
    _limits.update(cap=cap, header_timeout=header_timeout)


def _configured() -> dict[str, float]:
    """This process's limits: set by ``run``, or, in a worker process that uvicorn started
    (``--workers``), from the ``RNGVAULT_*`` environment ``run`` exported for it."""
    if not _limits:
        settings = Settings.from_env()
        configure(connection_cap(settings.max_connections, file_limit()), settings.header_timeout)
    return _limits


def file_limit() -> int | None:
    """The soft limit on open files (None where there is none)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _guard(parent: Any) -> type:
    """A subclass of uvicorn's HTTP protocol ``parent`` with the limits above."""

    class Guarded(parent):
        _rv_waiting = True  # no whole request head since connecting or the last response
        _rv_cycle: Any = None  # the request cycle current when waiting began
        _rv_since = 0.0  # when waiting began
        _rv_heard = 0.0  # when bytes last arrived
        _rv_bytes = 0  # bytes received on the connection
        _rv_body = (0.0, 0)  # when the current request's head was noticed, and _rv_bytes then

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            now = self.loop.time()
            self._rv_cycle, self._rv_since, self._rv_heard = self.cycle, now, now
            if _sweeper.get(id(self.connections)) is None:
                _sweeper[id(self.connections)] = self.loop.call_later(
                    SWEEP, _sweep, self.loop, self.connections
                )
            if len(self.connections) > _configured()["cap"]:
                _evict(self)

        def data_received(self, data: bytes) -> None:
            now = self.loop.time()
            _idle(self)  # notes a request head that arrived since waiting began
            if not self._rv_waiting and _between_requests(self):
                self._rv_waiting, self._rv_cycle, self._rv_since = True, self.cycle, now
            self._rv_heard = now
            self._rv_bytes += len(data)
            super().data_received(data)

    name = f"Guarded{parent.__name__}"
    Guarded.__name__ = Guarded.__qualname__ = name
    Guarded.__module__ = __name__  # importable by name: uvicorn's workers unpickle it
    return Guarded


_sweeper: dict[int, Any] = {}


def _between_requests(protocol: Any) -> bool:
    cycle = protocol.cycle
    return cycle is None or bool(cycle.response_complete)


def _idle(protocol: Any) -> bool:
    """Waiting for a request head (none started, or only part of one), or between requests."""
    if protocol._rv_waiting and protocol.cycle is not protocol._rv_cycle:
        protocol._rv_waiting = False  # a new request's head arrived
        protocol._rv_body = (protocol.loop.time(), protocol._rv_bytes)
    return bool(protocol._rv_waiting) or _between_requests(protocol)


def _close(protocol: Any) -> None:
    if not protocol.transport.is_closing():
        protocol.transport.close()


def _evict(newcomer: Any) -> None:
    idle = [
        c
        for c in newcomer.connections
        if c is not newcomer and hasattr(c, "_rv_waiting") and _idle(c)
    ]
    _close(min(idle, key=lambda c: c._rv_heard) if idle else newcomer)


def _sweep(loop: Any, connections: set[Any]) -> None:
    now = loop.time()
    timeout = _configured()["header_timeout"]
    for protocol in list(connections):
        if not hasattr(protocol, "_rv_waiting"):
            continue
        cycle = protocol.cycle
        if _idle(protocol) and protocol._rv_waiting:
            if now - protocol._rv_since > timeout:
                _close(protocol)
        elif cycle is not None and cycle.more_body and not cycle.response_complete:
            since, received = protocol._rv_body
            elapsed = now - since
            if now - protocol._rv_heard > timeout:
                _close(protocol)  # a body that stopped arriving
            elif elapsed > timeout and protocol._rv_bytes - received < MIN_BODY_RATE * elapsed:
                _close(protocol)  # a body that trickles in
    _sweeper[id(connections)] = loop.call_later(SWEEP, _sweep, loop, connections)


GuardedH11Protocol = _guard(H11Protocol)
GuardedHttpToolsProtocol: type | None
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools
    GuardedHttpToolsProtocol = None
else:
    GuardedHttpToolsProtocol = _guard(HttpToolsProtocol)


def guarded_protocol() -> type:
    """uvicorn's fastest HTTP/1.1 protocol here (httptools if installed, else h11), guarded."""
    return GuardedHttpToolsProtocol or GuardedH11Protocol


class RepeatLimit(logging.Filter):
    """Lets through ``burst`` records of one message template (per logger and level) every
    ``window`` seconds; the next record let through says how many were dropped."""

    def __init__(self, burst: int = 100, window: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            dropped = int(entry[2]) if entry else 0
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            if dropped:
                record.msg = (
                    f"{record.getMessage()} ({dropped} more like this were not logged "
                    f"in {self.window:g} s)"
                )
                record.args = ()
            return True
        entry[1] += 1
        if entry[1] <= self.burst:
            return True
        entry[2] += 1
        return False


_LOG_LIMIT = RepeatLimit()


def limit_logs() -> None:
    """Install ``RepeatLimit`` on the loggers a flood can fill (not the access log); once."""
    for name in LIMITED_LOGGERS:
        logging.getLogger(name).addFilter(_LOG_LIMIT)


def export(settings: Settings) -> None:
    """Put ``settings`` into this process's ``RNGVAULT_*`` environment, where the worker
    processes of ``--workers`` read them (``app_from_env``)."""
    import os

    values: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "db": settings.db,
        "max_body": settings.max_body,
        "insecure_open": settings.insecure_open,
        "access_log": settings.access_log,
        "allowed_hosts": ",".join(settings.allowed_hosts),
        "max_connections": settings.max_connections,
        "header_timeout": settings.header_timeout,
        "keep_alive": settings.keep_alive,
    }
    if settings.tokens_required:  # else each worker looks at the default place, as this did
        values["tokens"] = settings.tokens
    if settings.blobs is not None:
        values["blobs"] = settings.blobs
    for name, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        os.environ[f"RNGVAULT_{name.upper()}"] = text


def run(app: Any, settings: Settings, workers: int = 1) -> None:
    """Serve ``app`` with uvicorn, as ``settings`` say, until interrupted; with several
    ``workers``, each worker process builds its own app from the exported settings."""
    import uvicorn

    configure(connection_cap(settings.max_connections, raise_file_limit()), settings.header_timeout)
    if workers > 1:
        export(settings)
    config = uvicorn.Config(
        "rngvault.server.app:app_from_env" if workers > 1 else app,
        factory=workers > 1,
        workers=workers,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_level="info",
        http=guarded_protocol(),
        timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]
        timeout_graceful_shutdown=10,
    )
    limit_logs()  # after uvicorn.Config, which configures logging
    log.info(
        "at most %d connections%s; request heads within %gs; keep-alive %gs",
        _limits["cap"],
        f" per worker ({workers} workers)" if workers > 1 else "",
        settings.header_timeout,
        settings.keep_alive,
    )
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run()
