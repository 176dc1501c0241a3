"""A stand-in server for the client tests: any small FastAPI app, served by a real uvicorn on
a free loopback port in a thread of the test process.

It plays the servers rngvault's own server never is: one that lists hostile names, serves
garbage, answers 500 for one snapshot, or records the headers it was sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tests._live import free_port


@contextmanager
def serve(app: FastAPI, timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 while the block runs; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"stub-server-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the stub server on {url} did not start")
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout)


def listing_item(name: str, created: object = 1e9, ranks: object = (0,)) -> dict[str, object]:
    """One entry of ``GET /v1/runs/NS/RUN/snapshots`` as rngvault's server writes it."""
    return {
        "name": name,
        "stored": 1e9,
        "created": created,
        "ranks": list(ranks),  # type: ignore[call-overload]
        "digest": "0" * 64,
        "size": 10,
        "step": None,
        "epoch": None,
        "metrics": {},
        "generators": [{"name": "g", "family": "numpy.bitgen"}],
    }
