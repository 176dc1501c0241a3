"""Rendering a stored snapshot as JSON, or re-encoding it with only some generators: in a
worker process for large bodies, so that seconds of CPU never hold up other requests.

A thread is not enough: decoding and JSON encoding spend long stretches inside single C
calls (msgpack's unpacker, the JSON encoder) that keep Python's GIL, and the event loop
waits for each to end (a 13.6 MB snapshot rendered in a thread still held /healthz up for
85 ms at a time). One worker process, started on the first large render, does them one
after another; bodies up to ``INLINE`` bytes render on the loop, where they take about a
millisecond.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from rngvault._format import decode, encode
from rngvault._json import snapshot_to_json
from rngvault._snapshot import Snapshot
from rngvault.server.errors import ApiError
from rngvault.server.media import JSON

INLINE = 256 * 1024


class MissingGenerators(Exception):
    """Raised in the worker; becomes a 404 in the server."""


def select(snapshot: Snapshot, generators: str) -> Snapshot:
    """``snapshot`` with only the comma-separated ``generators``."""
    names = [n for n in generators.split(",") if n]
    missing = [n for n in names if n not in snapshot.states]
    if missing:
        raise MissingGenerators(
            f"no generator {', '.join(map(repr, missing))} in this snapshot; it has "
            f"{', '.join(snapshot.states)}"
        )
    return dataclasses.replace(
        snapshot,
        states={n: snapshot.states[n] for n in names},
        probes={n: v for n, v in snapshot.probes.items() if n in names},
    )


def render(body: bytes, media: str, generators: str | None) -> bytes:
    """The stored ``body`` as ``media`` (JSON or msgpack), with only ``generators`` if given."""
    snapshot = decode(body)
    if generators is not None:
        snapshot = select(snapshot, generators)
    if media == JSON:
        text = json.dumps(
            snapshot_to_json(snapshot), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return text.encode("utf-8")
    return encode(snapshot)


class Renderer:
    """Runs ``render``: inline for small bodies, in its worker process for large ones."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def __call__(self, body: bytes, media: str, generators: str | None) -> bytes:
        try:
            if len(body) <= INLINE:
                return render(body, media, generators)
            if self._pool is None:
                # spawn: a fresh interpreter, not a fork of a process with running threads
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(1, mp_context=context)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._pool, render, body, media, generators)
            except BrokenProcessPool:
                self._pool = None  # the worker died (killed, out of memory): a new one next time
                raise ApiError(
                    503, "unavailable", "the worker rendering this snapshot stopped; try again"
                ) from None
        except MissingGenerators as exc:
            raise ApiError(404, "not_found", str(exc)) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
