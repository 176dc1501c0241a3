"""Benchmark: the worst bodies for decode, valid and hostile, and what each costs.

    .venv/bin/python scripts/bench_decode_bounds.py [--repeat 5]

Prints, for each body, its size and the least CPU time (``time.process_time``) of
``--repeat`` decodes, and whether decode accepted or refused it:

- MAX_STATES copies of each family's slowest valid state to check (the shapes of
  tests/families/test_validation_bounds.py);
- hostile bodies: 16 MiB and 62 MiB of one-element arrays inside the states, and 16 MiB of
  them outside (in the environment).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rngvault
from rngvault import _format
from tests.families.test_validation_bounds import WORST


def body(states: object, environment: object) -> bytes:
    """A snapshot body with these raw states and environment, and a matching digest."""
    packed = msgpack.packb(states, use_bin_type=True)
    return msgpack.packb(
        {
            "created": 1.0,
            "digest": hashlib.sha256(packed).hexdigest(),
            "environment": environment,
            "format": "rngvault-snapshot",
            "metadata": {},
            "probes": {},
            "states": states,
            "version": 1,
        },
        use_bin_type=True,
    )


def tiny_arrays(count: int, per_state: int = 131_000) -> bytes:
    key = [[0]] * per_state
    states = {
        f"g{i:04d}": {"family": "python", "fields": {"gauss_next": None, "index": 1, "key": key}}
        for i in range(count)
    }
    return body(states, {})


def least_cpu(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def decode_outcome(data: bytes) -> str:
    try:
        rngvault.decode(data)
    except rngvault.DecodeError as exc:
        return f"refused: {str(exc)[:60]}"
    return "accepted"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args(argv).repeat
    bodies: dict[str, bytes] = {}
    for shape, (family, fields) in WORST.items():
        states = {f"g{i}": rngvault.State(family, fields) for i in range(_format.MAX_STATES)}
        bodies[f"{_format.MAX_STATES} x {shape}"] = rngvault.encode(
            rngvault.Snapshot(states, created=0.0)
        )
    bodies["hostile: one-element arrays in states, 16 MiB"] = tiny_arrays(64)
    bodies["hostile: one-element arrays in states, 62 MiB"] = tiny_arrays(250)
    bodies["hostile: one-element arrays outside states, 16 MiB"] = body(
        {}, {"x": [[0]] * (8 * 2**20)}
    )
    print(f"{'body':<56} {'MiB':>6} {'least CPU ms':>13}  outcome")
    for label, data in bodies.items():
        took = least_cpu(lambda data=data: decode_outcome(data), repeat)
        print(f"{label:<56} {len(data) / 2**20:>6.1f} {took * 1000:>13.1f}  {decode_outcome(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
