"""How ``rngvault serve`` runs uvicorn: connection limits and timeouts, a file limit that
fits them, and logs that a flood of bad connections cannot fill.

uvicorn closes a keep-alive connection that stays idle, but not one that never sends a
request, nor one that sends its headers or body a byte at a time, and it accepts
connections until the process runs out of file descriptors, after which every accept
fails. ``guarded`` wraps uvicorn's HTTP protocol so that:

- a connection must send a whole request head within ``header_timeout`` seconds of its
  first byte (or of connecting, or of its previous response), else it is closed;
- a request body that stops arriving for ``header_timeout`` seconds is closed;
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

from rngvault.server.settings import Settings

FILE_RESERVE = 64  # descriptors kept for the database, its readers, logs and threads
SWEEP = 0.5  # seconds between looks at connections' deadlines
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


def _protocol_base() -> type:
    """uvicorn's fastest HTTP/1.1 protocol here: httptools if installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def guarded(cap: int, header_timeout: float, base: type | None = None) -> type:
    """A subclass of uvicorn's HTTP protocol ``base`` with the limits above."""
    parent: Any = base or _protocol_base()
    sweeper: dict[str, Any] = {"handle": None}

    class Guarded(parent):
        _rv_waiting = True  # no whole request head since connecting or the last response
        _rv_cycle: Any = None  # the request cycle current when waiting began
        _rv_since = 0.0  # when waiting began
        _rv_heard = 0.0  # when bytes last arrived

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            now = self.loop.time()
            self._rv_cycle, self._rv_since, self._rv_heard = self.cycle, now, now
            if sweeper["handle"] is None:
                sweeper["handle"] = self.loop.call_later(SWEEP, _sweep, self.loop, self)
            if len(self.connections) > cap:
                _evict(self)

        def data_received(self, data: bytes) -> None:
            now = self.loop.time()
            _idle(self)  # notes a request head that arrived since waiting began
            if not self._rv_waiting and _between_requests(self):
                self._rv_waiting, self._rv_cycle, self._rv_since = True, self.cycle, now
            self._rv_heard = now
            super().data_received(data)

    def _between_requests(protocol: Any) -> bool:
        cycle = protocol.cycle
        return cycle is None or bool(cycle.response_complete)

    def _idle(protocol: Any) -> bool:
        """Waiting for a request head (none started, or only part of one)."""
        if protocol._rv_waiting and protocol.cycle is not protocol._rv_cycle:
            protocol._rv_waiting = False  # a new request's head arrived
        return bool(protocol._rv_waiting) or _between_requests(protocol)

    def _close(protocol: Any) -> None:
        if not protocol.transport.is_closing():
            protocol.transport.close()

    def _evict(newcomer: Any) -> None:
        idle = [c for c in newcomer.connections if c is not newcomer and _idle(c)]
        _close(min(idle, key=lambda c: c._rv_heard) if idle else newcomer)

    def _sweep(loop: Any, anchor: Any) -> None:
        now = loop.time()
        for protocol in list(anchor.connections):
            if not isinstance(protocol, Guarded):
                continue
            cycle = protocol.cycle
            if _idle(protocol) and protocol._rv_waiting:
                if now - protocol._rv_since > header_timeout:
                    _close(protocol)
            elif (
                cycle is not None
                and cycle.more_body
                and not cycle.response_complete
                and now - protocol._rv_heard > header_timeout
            ):
                _close(protocol)  # a body that stopped arriving
        sweeper["handle"] = loop.call_later(SWEEP, _sweep, loop, anchor)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{parent.__name__}"
    return Guarded


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


def limit_logs(limit: logging.Filter | None = None) -> logging.Filter:
    """Install ``RepeatLimit`` on the loggers a flood can fill (not the access log)."""
    limit = limit or RepeatLimit()
    for name in LIMITED_LOGGERS:
        logging.getLogger(name).addFilter(limit)
    return limit


def run(app: Any, settings: Settings) -> None:
    """Serve ``app`` with uvicorn, as ``settings`` say, until interrupted."""
    import uvicorn

    cap = connection_cap(settings.max_connections, raise_file_limit())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_level="info",
        http=guarded(cap, settings.header_timeout),
        timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]
        timeout_graceful_shutdown=10,
    )
    limit_logs()  # after uvicorn.Config, which configures logging
    log.info(
        "at most %d connections; request heads within %gs; keep-alive %gs",
        cap,
        settings.header_timeout,
        settings.keep_alive,
    )
    uvicorn.Server(config).run()
