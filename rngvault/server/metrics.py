"""Prometheus metrics, written by hand (text format 0.0.4), and the middleware that counts.

- ``rngvault_requests_total{method, route, status}``: requests by route template;
- ``rngvault_request_seconds_sum`` / ``_count{method, route}``: time spent answering;
- ``rngvault_request_bytes_total`` / ``rngvault_response_bytes_total``: bodies in and out;
- ``rngvault_snapshots_stored_total``: snapshots this process stored (201 answers);
- ``rngvault_batch_items_total{status}``: items of batch requests, by the status each got;
- ``rngvault_snapshots``: snapshot names in the store, read when scraped.

The middleware is plain ASGI (no per-request objects beyond two closures) and logs only
failed requests, so that the default costs little next to the request itself; the full
access log is uvicorn's, behind ``--access-log``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rngvault.server.errors import printable

log = logging.getLogger("rngvault.server")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters of one server process."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.seconds: defaultdict[tuple[str, str], float] = defaultdict(float)
        self.bytes_in = 0
        self.bytes_out = 0
        self.snapshots_stored = 0
        self.batch_items: defaultdict[int, int] = defaultdict(int)

    def observe(
        self, method: str, route: str, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        self.requests[method, route, status] += 1
        self.seconds[method, route] += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def render(self, snapshots: int | None) -> str:
        lines = [
            "# HELP rngvault_requests_total HTTP requests by route template and status.",
            "# TYPE rngvault_requests_total counter",
        ]
        counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        for (method, route, status), n in sorted(self.requests.items()):
            counts[method, route] += n
            lines.append(
                f'rngvault_requests_total{{method="{method}",route="{_label(route)}",'
                f'status="{status}"}} {n}'
            )
        lines += [
            "# HELP rngvault_request_seconds Time spent answering requests.",
            "# TYPE rngvault_request_seconds summary",
        ]
        for (method, route), total in sorted(self.seconds.items()):
            labels = f'method="{method}",route="{_label(route)}"'
            lines.append(f"rngvault_request_seconds_sum{{{labels}}} {total:.6f}")
            lines.append(f"rngvault_request_seconds_count{{{labels}}} {counts[method, route]}")
        for name, value, text in (
            ("rngvault_request_bytes_total", self.bytes_in, "Request body bytes received."),
            ("rngvault_response_bytes_total", self.bytes_out, "Response body bytes sent."),
            ("rngvault_snapshots_stored_total", self.snapshots_stored, "Snapshots stored."),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
        lines += [
            "# HELP rngvault_batch_items_total Items of batch requests by the status each got.",
            "# TYPE rngvault_batch_items_total counter",
        ]
        for status, n in sorted(self.batch_items.items()):
            lines.append(f'rngvault_batch_items_total{{status="{status}"}} {n}')
        if snapshots is not None:
            lines += [
                "# HELP rngvault_snapshots Snapshot names in the store.",
                "# TYPE rngvault_snapshots gauge",
                f"rngvault_snapshots {snapshots}",
            ]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts every HTTP request by its route template; logs the failed ones."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "in": 0, "out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - start
            status = state["status"]
            self.metrics.observe(
                scope["method"], template, status, elapsed, state["in"], state["out"]
            )
            if status >= 400:
                level = logging.WARNING if status >= 500 else logging.INFO
                log.log(
                    level,
                    "%s %s %d %.1fms",
                    printable(scope["method"], 20),
                    printable(scope["path"]),
                    status,
                    elapsed * 1000,
                )
