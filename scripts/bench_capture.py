"""Benchmark: what capturing, encoding and restoring the standard set of generators costs.

    .venv/bin/python scripts/bench_capture.py [--repeat 3000]

The standard set: the python, numpy and torch CPU globals, two PCG64 Generators, one
MT19937 Generator and one CPU torch.Generator. Prints medians in microseconds, all measured
in this one run with the steps interleaved (each repetition times every step once, so that
they share the machine's conditions):

(a) the raw public getstate calls of the set;
(b) ``rngvault.capture`` of the same set (include_globals=True plus the 4 named objects);
(c) ``rngvault.encode`` of that snapshot;
(d) ``rngvault.decode`` + ``rngvault.restore``;
(e) the frameworks' path: the raw calls, then ``torch.save`` of the states dict to a file;

then the ratios capture / raw (target <= 1.1) and (e) / (capture + encode) (target >= 5),
and a per-generator breakdown of (a) against (b).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import rngvault
from rngvault.families import family_of


def interleaved_medians(steps: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median microseconds of each step, timing every step once per repetition in a random
    order, so that the steps share the machine's load and none always runs first."""
    samples: dict[str, list[int]] = {name: [] for name in steps}
    order = list(steps.items())
    for _ in range(max(repeat // 10, 20)):  # warm up
        for _name, fn in order:
            fn()
    shuffle = random.Random(0).shuffle
    clock = time.perf_counter_ns
    for _ in range(repeat):
        shuffle(order)
        for name, fn in order:
            start = clock()
            fn()
            samples[name].append(clock() - start)
    return {name: statistics.median(values) / 1000 for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3000)
    repeat = parser.parse_args(argv).repeat

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    pcg_a, pcg_b = np.random.default_rng(4), np.random.default_rng(5)
    mt = np.random.Generator(np.random.MT19937(6))
    gen = torch.Generator().manual_seed(7)
    named = {"pcg_a": pcg_a, "pcg_b": pcg_b, "mt": mt, "torch_gen": gen}

    raw_calls: dict[str, Callable[[], object]] = {
        "python.global": random.getstate,
        "numpy.global": lambda: np.random.get_state(legacy=False),
        "torch.cpu": torch.get_rng_state,
        "pcg_a": lambda: pcg_a.bit_generator.state,
        "pcg_b": lambda: pcg_b.bit_generator.state,
        "mt": lambda: mt.bit_generator.state,
        "torch_gen": gen.get_state,
    }

    def raw() -> dict[str, object]:
        return {name: call() for name, call in raw_calls.items()}

    snapshot = rngvault.capture(named)
    assert sorted(snapshot.states) == sorted(raw_calls), sorted(snapshot.states)
    data = rngvault.encode(snapshot)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rng_state.pth"

        def frameworks() -> None:
            torch.save(raw(), path)

        # Two groups, so that the slow steps do not evict the fast ones' data from the caches.
        medians = interleaved_medians(
            {
                "raw": raw,
                "capture": lambda: rngvault.capture(named),
                "encode": lambda: rngvault.encode(snapshot),
            },
            repeat,
        )
        medians |= interleaved_medians(
            {
                "decode_restore": lambda: rngvault.restore(rngvault.decode(data), named),
                "frameworks": frameworks,
            },
            max(repeat // 5, 100),
        )
        torch_save_bytes = path.stat().st_size

    objects = {
        "python.global": random._inst,
        "numpy.global": np.random.mtrand._rand,
        "torch.cpu": torch.default_generator,
        **named,
    }
    breakdown: dict[str, Callable[[], object]] = {}
    for name, obj in objects.items():
        family = family_of(obj)
        breakdown[f"raw {name}"] = raw_calls[name]
        breakdown[f"capture {name}"] = lambda obj=obj, family=family: family.capture(obj)
    parts = interleaved_medians(breakdown, repeat)

    capture_ratio = medians["capture"] / medians["raw"]
    save_ratio = medians["frameworks"] / (medians["capture"] + medians["encode"])
    print(
        f"rngvault {rngvault.__version__} capture benchmark: Python {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__}, {platform.machine()} "
        f"{platform.system()}, {repeat} interleaved repetitions"
    )
    print(
        "standard set: python, numpy and torch CPU globals, 2 PCG64 Generators, "
        "1 MT19937 Generator, 1 CPU torch.Generator"
    )
    print()
    print(f"{'step':<52} {'median µs':>10}")
    rows = [
        ("(a) raw getstate calls", "raw"),
        ("(b) rngvault.capture", "capture"),
        ("(c) rngvault.encode", "encode"),
        ("(d) rngvault.decode + rngvault.restore", "decode_restore"),
        ("(e) raw getstate calls + torch.save to a file", "frameworks"),
    ]
    for label, key in rows:
        print(f"{label:<52} {medians[key]:>10.1f}")
    print()
    print(f"capture / raw                                  {capture_ratio:6.2f}  (target <= 1.1)")
    print(f"frameworks' path / (capture + encode)          {save_ratio:6.2f}  (target >= 5)")
    print(f"snapshot size: msgpack {len(data)} bytes, torch.save {torch_save_bytes} bytes")
    print()
    print(f"{'per generator':<20} {'raw µs':>8} {'capture µs':>11} {'overhead µs':>12}")
    for name in objects:
        raw_us, capture_us = parts[f"raw {name}"], parts[f"capture {name}"]
        print(f"{name:<20} {raw_us:>8.2f} {capture_us:>11.2f} {capture_us - raw_us:>12.2f}")
    summed = sum(parts[f"capture {n}"] for n in objects) - sum(parts[f"raw {n}"] for n in objects)
    rest = medians["capture"] - medians["raw"] - summed
    print(f"{'(families, summed)':<20} {'':>8} {'':>11} {summed:>12.2f}")
    print(f"{'(capture() itself)':<20} {'':>8} {'':>11} {rest:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
