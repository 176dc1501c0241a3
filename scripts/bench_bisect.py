"""Benchmark: ``rngvault.bisect`` of two long runs through a live server on loopback.

    .venv/bin/python scripts/bench_bisect.py [--steps 100000] [--plant 90000] [--repeat 5]
        [--db DIR]

Builds three runs of one loop (a draw from python's ``random``, NumPy's legacy generator,
torch's CPU generator and a PCG64 ``augment`` Generator at every step, a snapshot at every
step): ``bench/a``; ``bench/b``, which draws once more from ``augment`` at step
``--plant``; and ``bench/same``, the same snapshots as ``bench/a``. They are stored straight
into a SQLite database through the server's storage backend (64 puts in flight), then
``rngvault serve`` is started on that database on a loopback port, and ``rngvault.bisect``
runs through an HttpStore ``--repeat`` times per case (a fresh client each time). Prints the
time to build and fill, the database size, and the median and spread of each case: the
diverging pair (bisect stops at the planted step and fetches the two snapshots there) and
the agreeing pair (both listings read to the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

import rngvault
from rngvault.server.storage.base import SnapshotKey
from rngvault.server.storage.sqlite import SQLiteStore
from rngvault.stores.http import HttpStore

Bodies = list[bytes]


def build(steps: int, plant: int) -> tuple[Bodies, Bodies]:
    """The encoded snapshots of run A and, from the planted step on, of run B."""
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    aug_a, aug_b = np.random.default_rng(11), np.random.default_rng(11)
    run_a: Bodies = []
    run_b: Bodies = []
    for step in range(steps):
        random.random(), np.random.random(), torch.rand(1)
        aug_a.random(), aug_b.random()
        if step == plant:
            aug_b.random()
        meta = rngvault.Metadata(step=step)
        for aug, bodies in ((aug_a, run_a), (aug_b, run_b)):
            snapshot = rngvault.capture({"augment": aug}, metadata=meta, environment={})
            bodies.append(rngvault.encode(snapshot))
            if step < plant:
                break  # B's snapshots are A's until the planted draw
    return run_a, run_b


async def fill(db: Path, runs: dict[str, Bodies], in_flight: int = 64) -> None:
    store = await SQLiteStore.open(f"sqlite:///{db}")
    gate = asyncio.Semaphore(in_flight)

    async def put(run: str, step: int, body: bytes) -> None:
        async with gate:  # decoded here: a run's Snapshot objects would take gigabytes
            await store.put(SnapshotKey("bench", run, f"step-{step}"), body, rngvault.decode(body))

    try:
        for run, bodies in runs.items():
            await asyncio.gather(*(put(run, i, body) for i, body in enumerate(bodies)))
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(db: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RNGVAULT_HOME": str(home)}
    command = [sys.executable, "-m", "rngvault", "serve", "--port", str(port)]
    command += ["--db", f"sqlite:///{db}"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit(f"the server did not start: {server.communicate()[1].decode()}")


def time_bisect(url: str, run_b: str, repeat: int) -> tuple[list[float], rngvault.BisectReport]:
    times = []
    for _ in range(repeat):
        store = HttpStore(url)
        try:
            start = time.perf_counter()
            report = rngvault.bisect(store, "bench/a", run_b)
            times.append(time.perf_counter() - start)
        finally:
            store.close()
    return times, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--plant", type=int, default=90_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, help="keep the database in DIR (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rngvault-bench-bisect-") as temp:
        where = args.db or Path(temp)
        where.mkdir(parents=True, exist_ok=True)
        db = where / "bisect.db"
        start = time.perf_counter()
        run_a, tail_b = build(args.steps, args.plant)
        built = time.perf_counter() - start
        run_b = run_a[: args.plant] + tail_b
        start = time.perf_counter()
        asyncio.run(fill(db, {"a": run_a, "b": run_b, "same": run_a}))
        filled = time.perf_counter() - start
        size = sum(p.stat().st_size for p in where.glob("bisect.db*"))
        print(
            f"{args.steps} steps per run: built in {built:.1f} s, 3 runs stored in {filled:.1f} s"
        )
        print(f"database: {size / 1e6:.1f} MB ({size / (3 * args.steps):.0f} bytes per snapshot)")
        server, url = serve(db, Path(temp))
        try:
            for label, run in (("diverging", "bench/b"), ("agreeing", "bench/same")):
                times, report = time_bisect(url, run, args.repeat)
                where_ = f"step {report.diverged_at}" if not report.agree else "no divergence"
                print(
                    f"{label}: median {statistics.median(times):.3f} s "
                    f"(min {min(times):.3f}, max {max(times):.3f}, {args.repeat} runs); "
                    f"{report.compared} shared steps compared, {where_}"
                )
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
