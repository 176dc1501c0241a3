"""Benchmark: what Vault.snapshot() costs the training thread, the background writer's
throughput, and restore time from the local store.

    .venv/bin/python scripts/bench_vault.py [--repeat 300]

Prints medians (microseconds) measured side by side in this one run, and the ratio of
snapshot()'s blocking time to the raw getstate calls of the same generators (target <= 1.25).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

import rngvault
import rngvault._api


def median_us(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args()

    pcg_a, pcg_b = np.random.default_rng(1), np.random.default_rng(2)
    mt = np.random.Generator(np.random.MT19937(3))
    tgen = torch.Generator().manual_seed(4)

    def raw() -> object:
        return (
            random.getstate(),
            np.random.get_state(legacy=False),
            torch.get_rng_state(),
            pcg_a.bit_generator.state,
            pcg_b.bit_generator.state,
            mt.bit_generator.state,
            tgen.get_state(),
        )

    with tempfile.TemporaryDirectory() as root:
        vault = rngvault.Vault(root, run="bench/vault")
        for name, obj in (("a", pcg_a), ("b", pcg_b), ("mt", mt), ("t", tgen)):
            vault.track(obj, name)
        counter = iter(range(10**9))

        def snapshot() -> object:
            return vault.snapshot(f"s{next(counter)}")

        targets = vault._targets()

        def capture() -> object:
            return rngvault._api.capture_resolved(targets)

        # Each sample is taken in the same situation as in training: after a little model
        # work, with the writer idle. The three measurements take turns, one per round.
        weights = torch.randn(256, 256)
        samples: dict[str, list[float]] = {"raw": [], "capture": [], "snapshot": []}
        timed = [("raw", raw), ("capture", capture), ("snapshot", snapshot)]
        for i in range(3 * args.repeat):
            label, fn = timed[i % 3]
            (weights @ weights).sum()  # a training step's worth of other work
            vault.flush()
            time.sleep(0.0005)  # let the writer thread go back to waiting on its queue
            samples[label].append(median_us(fn, 1))
        raw_us, capture_us, snap_us = (
            statistics.median(samples[k]) for k in ("raw", "capture", "snapshot")
        )

        burst = 200
        t0 = time.perf_counter()
        for i in range(burst):
            vault.snapshot(f"burst{i}")
        vault.flush()
        per_second = burst / (time.perf_counter() - t0)

        vault.snapshot("restore-me", durable=True)
        restore_us = median_us(lambda: vault.restore("restore-me"), max(20, args.repeat // 10))
        get_us = median_us(lambda: vault.get("restore-me"), max(20, args.repeat // 10))
        vault.close()

    print(
        f"generators: python, numpy legacy, torch CPU (globals) + 2 PCG64, 1 MT19937, "
        f"1 torch.Generator; {args.repeat} repetitions"
    )
    print(f"raw getstate calls          median {raw_us:9.1f} us")
    print(
        f"capture of the same set     median {capture_us:9.1f} us   "
        f"ratio {capture_us / raw_us:.2f}x"
    )
    print(
        f"vault.snapshot() (blocking) median {snap_us:9.1f} us   ratio {snap_us / raw_us:.2f}x"
        " (target <= 1.25x)"
    )
    print(
        f"background writer           {per_second:9.0f} snapshots/s (encode, probes, "
        "fsync'd local store)"
    )
    print(f"vault.get() from local      median {get_us:9.1f} us")
    print(f"vault.restore() from local  median {restore_us:9.1f} us")


if __name__ == "__main__":
    main()
