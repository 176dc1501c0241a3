"""Benchmark: bytes the server's database takes per step of a run that snapshots every step.

    .venv/bin/python scripts/bench_server_bytes.py [--steps 10000] [--backend sqlite|postgresql|all]
        [--check-every 50]

Captures a small loop at every step (python, NumPy legacy and torch CPU globals, with a
dropout-like ``torch.rand(200_000)`` a step; a PCG64 augmentation Generator; a tracked
DataLoader, whose epoch position changes every step), each with ``Metadata(step=i)``, and
puts the encoded snapshots through each backend's ``put`` in this process, as the server's
PUT would. Prints bytes per step (database growth / steps) and where they went:

- SQLite: the file's growth after a WAL checkpoint, split by table and index (``dbstat``).
- PostgreSQL (a throwaway server, as the tests start one; skipped where none can run):
  ``pg_total_relation_size`` of each table after ``VACUUM``, split into the table (with
  its TOAST) and each index.

A sample of the snapshots (every ``--check-every``-th step and the last) is read back at
the end, in step order, and compared with the bytes put; the mean time of those GETs is
printed with the puts'.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

import rngvault
from rngvault.families import dataloader
from rngvault.server.storage import open_store
from rngvault.server.storage.base import SnapshotKey, Store

TABLES = ("runs", "snapshots", "entries", "states", "entry_states", "dictionaries")


def capture_steps(count: int) -> list[tuple[bytes, rngvault.Snapshot]]:
    """A snapshot at each of ``count`` steps of a small loop, encoded."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    augment = np.random.default_rng(1)
    data = TensorDataset(torch.arange(4096.0))
    loader = DataLoader(
        data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2)
    )
    dataloader.watch(loader)
    taken: list[tuple[bytes, rngvault.Snapshot]] = []
    batches = iter(loader)
    for step in range(count):
        try:
            next(batches)
        except StopIteration:
            batches = iter(loader)
            next(batches)
        torch.rand(200_000)  # dropout masks
        augment.normal(size=64)
        np.random.random_sample(16)
        random.random()
        snap = rngvault.capture(
            {"augment": augment, "loader": loader}, metadata=rngvault.Metadata(step=step)
        )
        taken.append((rngvault.encode(snap), snap))
    return taken


CHECK_EVERY = 50


async def fill(
    store: Store, taken: list[tuple[bytes, rngvault.Snapshot]], check_every: int
) -> tuple[float, float]:
    """Put every snapshot, then read a sample back; seconds each put and each GET took."""
    began = time.perf_counter()
    for step, (data, snap) in enumerate(taken):
        stored = await store.put(SnapshotKey("bench", "every-step", f"step-{step}"), data, snap)
        assert stored.created, step
    took = (time.perf_counter() - began) / len(taken)
    sample = sorted({*range(0, len(taken), max(1, check_every)), len(taken) - 1})
    began = time.perf_counter()
    for step in sample:
        back = await store.get(SnapshotKey("bench", "every-step", f"step-{step}"))
        assert back == taken[step][0], f"step {step} came back different"
    return took, (time.perf_counter() - began) / len(sample)


def report(
    backend: str, steps: int, total: int, parts: list[tuple[str, int]], took: tuple[float, float]
) -> None:
    print(f"{backend}: {total / steps:,.0f} bytes per step ({total:,} bytes for {steps:,} steps;")
    print(f"  puts {took[0] * 1e3:.2f} ms each, GETs of a sample {took[1] * 1e3:.2f} ms each)")
    for name, size in sorted(parts, key=lambda p: -p[1]):
        print(f"  {name:<26} {size / steps:>8,.1f} B/step")


async def bench_sqlite(taken: list[tuple[bytes, rngvault.Snapshot]], check_every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = await open_store(f"sqlite:///{path}")
        try:
            empty = path.stat().st_size
            took = await fill(store, taken, check_every)
        finally:
            await store.close()
        import sqlite3

        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total = path.stat().st_size - empty
        parts = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        conn.close()
        report("sqlite", len(taken), total, parts, took)


async def bench_postgres(taken: list[tuple[bytes, rngvault.Snapshot]], check_every: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import _postgres

    reason = _postgres.unavailable()
    if reason is not None:
        print(f"postgresql: skipped ({reason})")
        return
    import psycopg

    server = _postgres.PostgresServer().start()
    try:
        url = server.create_database()
        with psycopg.connect(url, autocommit=True) as conn:
            empty = _pg_sizes(conn)
        store = await open_store(url)
        try:
            took = await fill(store, taken, check_every)
        finally:
            await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"VACUUM {', '.join(TABLES)}")
            sizes = _pg_sizes(conn)
        parts = [(name, size - empty.get(name, 0)) for name, size in sizes.items()]
        report("postgresql", len(taken), sum(p[1] for p in parts), parts, took)
    finally:
        server.stop()


def _pg_sizes(conn: object) -> dict[str, int]:
    """Bytes of each table (heap and TOAST) and of each of its indexes."""
    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT c.relname, pg_table_size(c.oid) FROM pg_class c"
        " WHERE c.relname = ANY(%s) AND c.relkind = 'r'"
        " UNION ALL SELECT i.relname, pg_relation_size(i.oid) FROM pg_index x"
        " JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE c.relname = ANY(%s)",
        (list(TABLES), list(TABLES)),
    ).fetchall()
    return {name: int(size) for name, size in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--check-every", type=int, default=CHECK_EVERY, metavar="N")
    args = parser.parse_args()
    began = time.perf_counter()
    taken = capture_steps(args.steps)
    mean = sum(len(d) for d, _s in taken) / len(taken)
    print(f"{args.steps:,} snapshots captured in {time.perf_counter() - began:.1f} s,")
    print(f"  {mean:,.0f} bytes each encoded")
    if args.backend in ("sqlite", "all"):
        asyncio.run(bench_sqlite(taken, args.check_every))
    if args.backend in ("postgresql", "all"):
        asyncio.run(bench_postgres(taken, args.check_every))


if __name__ == "__main__":
    main()
