"""Benchmark: the Vault against a local rngvault server.

    .venv/bin/python scripts/bench_client.py [--repeat 300]

Starts `rngvault serve` on a loopback port with a temporary database, then prints, measured
side by side in this one run:
- the blocking time of snapshot() with the HTTP store and with the local store (median and
  p99; target: ratio within 1.1), and with the server paused (SIGSTOP) or dead;
- how many snapshots per second the background writer sustains to the server;
- fetch + restore of a snapshot from the server (p50, local cache cleared each time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch

import rngvault


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, RNGVAULT_HOME=str(home))
    command = [
        sys.executable,
        "-m",
        "rngvault",
        "serve",
        "--port",
        str(port),
        "--db",
        f"sqlite:///{home / 'bench.db'}",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def blocking_times(vault: rngvault.Vault, count: int, between: Callable[[], object]) -> list[float]:
    """snapshot() blocking time in microseconds, with a training step's work between."""
    samples = []
    for i in range(count):
        between()
        t0 = time.perf_counter_ns()
        vault.snapshot(f"s{i}")
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="rngvault-bench-"))
    os.environ["RNGVAULT_HOME"] = str(home / "client")
    os.environ["RNGVAULT_TIMEOUT"] = "1"
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = start_server(home, port)
    weights = torch.randn(256, 256)

    def step() -> None:
        (weights @ weights).sum()  # a training step's worth of other work
        time.sleep(0.002)  # and time for the writer to drain, as between real steps

    try:
        vaults = {}
        for label, store in (("http", url), ("local", str(home / "local-store"))):
            vault = rngvault.Vault(store, run=f"bench/{label}")
            vault.track(np.random.default_rng(1), "augment")
            vault.track(torch.Generator().manual_seed(2), "loader")
            vaults[label] = vault
        # Alternate the two stores in rounds so both see the same machine state.
        times: dict[str, list[float]] = {"http": [], "local": []}
        rounds = 10
        for r in range(rounds):
            for label in ("http", "local") if r % 2 else ("local", "http"):
                vault = vaults[label]
                vault.flush()
                offset = len(times[label])
                for i in range(args.repeat // rounds):
                    step()
                    t0 = time.perf_counter_ns()
                    vault.snapshot(f"s{offset + i}")
                    times[label].append((time.perf_counter_ns() - t0) / 1000)
        for vault in vaults.values():
            vault.flush()

        # Writer throughput: a burst, timed until the server has every snapshot.
        burst = 300
        vault = vaults["http"]
        t0 = time.perf_counter()
        for i in range(burst):
            vault.snapshot(f"burst{i}")
        vault.flush()
        per_second = burst / (time.perf_counter() - t0)

        # fetch + restore p50, with the fetch cache cleared so each one goes to the server.
        target = np.random.default_rng(0)
        fetch_restore = []
        for _ in range(50):
            shutil.rmtree(home / "client" / "cache", ignore_errors=True)
            t0 = time.perf_counter_ns()
            snapshot = rngvault.fetch("bench/http", "s0", url=url)
            rngvault.restore(snapshot, {"augment": target}, include_globals=False)
            fetch_restore.append((time.perf_counter_ns() - t0) / 1000)

        # Outage: the server paused (connections open, nothing answers), then dead.
        warnings.simplefilter("ignore")
        outage = rngvault.Vault(url, run="bench/outage")
        outage.track(np.random.default_rng(1), "augment")
        server.send_signal(signal.SIGSTOP)
        paused = blocking_times(outage, 100, step)
        server.send_signal(signal.SIGKILL)
        server.wait()
        dead = blocking_times(outage, 100, step)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGCONT)
            server.kill()

    med = statistics.median
    print(
        f"generators: python, numpy, torch CPU globals + 1 PCG64 + 1 torch.Generator; "
        f"{len(times['http'])} snapshots per store"
    )
    print(
        f"snapshot() blocking, local store   median {med(times['local']):8.1f} us  "
        f"p99 {p99(times['local']):8.1f} us"
    )
    print(
        f"snapshot() blocking, HTTP store    median {med(times['http']):8.1f} us  "
        f"p99 {p99(times['http']):8.1f} us  ratio {med(times['http']) / med(times['local']):.2f}x"
        " (target <= 1.1x)"
    )
    for label, samples in (("server paused", paused), ("server dead  ", dead)):
        print(
            f"snapshot() blocking, {label} median {med(samples):8.1f} us  "
            f"p99 {p99(samples):8.1f} us"
        )
    print(f"background writer to the server    {per_second:8.0f} snapshots/s")
    print(f"fetch + restore from the server    p50 {med(fetch_restore):8.1f} us")
    shutil.rmtree(home, ignore_errors=True)
    os._exit(0)  # the outage vault's spool is abandoned on purpose: do not wait at exit


if __name__ == "__main__":
    main()
