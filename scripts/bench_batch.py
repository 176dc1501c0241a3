"""Benchmark: sending per-step snapshots to a server one PUT each vs in batches.

    .venv/bin/python scripts/bench_batch.py [--snapshots 2000] [--batch 64] [--rounds 5]

Captures the generators of a small training loop at every step (python, NumPy legacy and
torch CPU globals, a PCG64 augmentation Generator, the DataLoader's torch.Generator), then
starts `rngvault serve` on a loopback port (SQLite in a temporary directory) and sends them,
in interleaved rounds, with ``HttpStore.put`` one at a time and with ``HttpStore.put_many``
in batches. Prints the medians over the rounds: snapshots per second, and CPU per snapshot
of this client process and of the server process.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_client import start_server  # scripts/ is sys.path[0] when run as a script
from torch.utils.data import DataLoader, TensorDataset

import rngvault
from rngvault.stores.http import HttpStore, PutItem

TICKS = os.sysconf("SC_CLK_TCK")


def capture_steps(count: int) -> list[tuple[str, bytes, rngvault.Snapshot]]:
    """A snapshot at each of ``count`` steps of a small loop, encoded."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    augment = np.random.default_rng(1)
    loader_gen = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(256, 8), torch.randn(256, 1))
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=loader_gen)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1)
    )
    taken: list[tuple[str, bytes, rngvault.Snapshot]] = []
    step = 0
    while step < count:
        for x, y in loader:
            x = x + torch.from_numpy(augment.normal(size=x.shape).astype(np.float32)) * 0.01
            model(x).sub(y).pow(2).mean().backward()
            np.random.rand()
            snap = rngvault.capture(
                {"augment": augment, "loader": loader_gen},
                metadata=rngvault.Metadata(step=step),
            )
            taken.append((f"step{step}", rngvault.encode(snap), snap))
            step += 1
            if step == count:
                break
    return taken


def server_cpu(pid: int) -> float:
    """Seconds of CPU the server process has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def send(store: HttpStore, items: list[PutItem], batch: int) -> None:
    if batch <= 1:
        for item in items:
            assert store.put(*item) is True
        return
    for start in range(0, len(items), batch):
        results = store.put_many(items[start : start + batch])
        assert all(r is True for r in results), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--snapshots", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    taken = capture_steps(args.snapshots)
    size = statistics.median(len(data) for _name, data, _snap in taken)
    home = Path(tempfile.mkdtemp(prefix="rngvault-bench-batch-"))
    os.environ["RNGVAULT_HOME"] = str(home / "client")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = start_server(home, port)
    measured: dict[str, list[tuple[float, float, float]]] = {"put": [], "put_many": []}
    try:
        store = HttpStore(url)
        for r in range(args.rounds):
            for label in ("put", "put_many") if r % 2 == 0 else ("put_many", "put"):
                run = f"bench/{label.replace('_', '-')}-{r}"
                items = [(run, name, data, snap) for name, data, snap in taken]
                cpu0, srv0, t0 = time.process_time(), server_cpu(server.pid), time.perf_counter()
                send(store, items, 1 if label == "put" else args.batch)
                wall = time.perf_counter() - t0
                cpu, srv = time.process_time() - cpu0, server_cpu(server.pid) - srv0
                measured[label].append((len(items) / wall, cpu / len(items), srv / len(items)))
        store.close()
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    print(
        f"{args.snapshots} snapshots of a training loop (python, numpy, torch CPU, PCG64, "
        f"loader generator; median {size:.0f} bytes), loopback server, SQLite; "
        f"medians of {args.rounds} rounds"
    )
    for label, what in (("put", "one PUT each"), ("put_many", f"put_many, {args.batch} a batch")):
        rates = [m[0] for m in measured[label]]
        client = [m[1] * 1e6 for m in measured[label]]
        server_us = [m[2] * 1e6 for m in measured[label]]
        print(
            f"{what:24s} {med(rates):8.0f} snapshots/s   client CPU {med(client):7.1f} us/snapshot"
            f"   server CPU {med(server_us):7.1f} us/snapshot"
        )
    ratio = med(m[0] for m in measured["put_many"]) / med(m[0] for m in measured["put"])
    cpu = med(m[1] for m in measured["put"]) / med(m[1] for m in measured["put_many"])
    print(f"batches: {ratio:.1f}x the snapshots/s, {cpu:.1f}x less client CPU per snapshot")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
