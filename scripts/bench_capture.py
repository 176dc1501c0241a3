"""Benchmark: what capturing, encoding and restoring the standard set of generators costs.

    .venv/bin/python scripts/bench_capture.py [--repeat 3000]

The standard set: the python, numpy and torch CPU globals, two PCG64 Generators, one
MT19937 Generator and one CPU torch.Generator. Prints medians in microseconds, all measured
in this one run:

(a) the raw public getstate calls of the set;
(b) ``rngvault.capture`` of the same set (include_globals=True plus the 4 named objects);
(c) ``rngvault.encode`` of that snapshot;
(d) ``rngvault.decode`` of its bytes, alone (target <= 60 µs) and followed by
    ``rngvault.restore`` (target <= 300 µs);
(e) the frameworks' path: the raw calls, then ``torch.save`` of the states dict to a file;

then the ratios capture / raw (target <= 1.1) and (e) / (capture + encode) (target >= 5),
where decode and restore spend (the steps that make most of each, timed beside them), and
each generator's raw call against its family's capture function. Every step is timed
in blocks of consecutive calls, the blocks of all steps interleaved in random order (see
``interleaved_medians``), so that the ratios compare steps measured under the same load.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
import torch

import rngvault
from rngvault import _format
from rngvault._snapshot import values_equal
from rngvault._split import state_spans
from rngvault.families import family_of, get_family


def interleaved_medians(
    steps: dict[str, Callable[[], object]], repeat: int, block: int = 20
) -> dict[str, float]:
    """Median microseconds of each step over ``repeat`` calls.

    The calls run in blocks of ``block`` consecutive calls of one step, the steps' blocks in
    a new random order each round: every step is timed warm (as timeit does), while all
    share the machine's load over the whole run and none always follows the same other.
    The garbage collector runs between blocks, not inside them.
    """
    samples: dict[str, list[int]] = {name: [] for name in steps}
    order = list(steps.items())
    shuffle = random.Random(0).shuffle
    clock = time.perf_counter_ns
    for _ in range(2):  # warm up
        for _name, fn in order:
            for _ in range(block):
                fn()
    gc.disable()  # as timeit does: a collection set off by one step must not land in another
    try:
        for _ in range(max(repeat // block, 1)):
            shuffle(order)
            for name, fn in order:
                record = samples[name].append
                for _ in range(block):
                    start = clock()
                    fn()
                    record(clock() - start)
                gc.collect(0)
    finally:
        gc.enable()
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

    objects = {
        "python.global": random._inst,
        "numpy.global": np.random.mtrand._rand,
        "torch.cpu": torch.default_generator,
        **named,
    }
    family_calls = {name: (family_of(obj).capture, obj) for name, obj in objects.items()}

    def families() -> dict[str, object]:
        """The families' capture functions alone, without capture()'s bookkeeping."""
        return {name: capture(obj) for name, (capture, obj) in family_calls.items()}

    snapshot = rngvault.capture(named)
    assert sorted(snapshot.states) == sorted(raw_calls), sorted(snapshot.states)
    data = rngvault.encode(snapshot)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rng_state.pth"

        def frameworks() -> None:
            torch.save(raw(), path)

        medians = interleaved_medians(
            {
                "raw": raw,
                "families": families,
                "capture": lambda: rngvault.capture(named),
                "encode": lambda: rngvault.encode(snapshot),
                "capture_encode": lambda: rngvault.encode(rngvault.capture(named)),
                "decode": lambda: rngvault.decode(data),
                "decode_restore": lambda: rngvault.restore(rngvault.decode(data), named),
                "frameworks": frameworks,
            },
            repeat,
        )
        torch_save_bytes = path.stat().st_size
    breakdown = _breakdown(data, objects, repeat)
    parts = {}
    for name in objects:
        capture, obj = family_calls[name]
        parts[name] = interleaved_medians(
            {"raw": raw_calls[name], "capture": lambda c=capture, o=obj: c(o)}, repeat
        )

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
    rows = [
        ("(a) raw getstate calls", "raw", ""),
        ("(b) rngvault.capture", "capture", ""),
        ("    of which the families' capture functions", "families", ""),
        ("(c) rngvault.encode", "encode", ""),
        ("(d) rngvault.decode", "decode", "  (target <= 60)"),
        ("(d) rngvault.decode + rngvault.restore", "decode_restore", "  (target <= 300)"),
        ("(e) raw getstate calls + torch.save to a file", "frameworks", ""),
        ("(b) + (c) in one call: encode(capture())", "capture_encode", ""),
    ]
    print(f"{'step':<52} {'median µs':>10}")
    for label, key, target in rows:
        print(f"{label:<52} {medians[key]:>10.1f}{target}")
    print()
    capture_ratio = medians["capture"] / medians["raw"]
    save_ratio = medians["frameworks"] / medians["capture_encode"]
    print(f"{'capture / raw':<52} {capture_ratio:>10.2f}  (target <= 1.1)")
    print(f"{'frameworks path / (capture + encode)':<52} {save_ratio:>10.2f}  (target >= 5)")
    print(f"snapshot size: msgpack {len(data)} bytes, torch.save {torch_save_bytes} bytes")
    print()
    print("where decode and restore spend (medians, interleaved in a run of their own):")
    for label, value in breakdown.items():
        print(f"    {label:<64} {value:>8.1f}")
    print()
    print(f"{'per generator':<20} {'raw µs':>8} {'capture µs':>11} {'difference':>11}")
    for name, pair in parts.items():
        difference = pair["capture"] - pair["raw"]
        print(f"{name:<20} {pair['raw']:>8.2f} {pair['capture']:>11.2f} {difference:>+11.2f}")
    return 0


def _breakdown(data: bytes, objects: dict[str, object], repeat: int) -> dict[str, float]:
    """decode and restore, and the steps that make most of each, timed side by side."""
    decoded = rngvault.decode(data)
    start, end, _entries = state_spans(data)
    span = data[start:end]
    plan = [
        (get_family(state.family), objects[name], state) for name, state in decoded.states.items()
    ]
    assert all(family is not None for family, _obj, _state in plan)
    captured = [family.capture(obj) for family, obj, _state in plan]  # type: ignore[union-attr]
    steps: dict[str, Callable[[], object]] = {
        "decode": lambda: rngvault.decode(data),
        "  read the top level but the states (msgpack, bounded)": lambda: _format._read_top_level(
            data
        ),
        "  SHA-256 of the states' bytes (the digest)": lambda: hashlib.sha256(span).digest(),
        "  unpack the states (msgpack in C)": lambda: msgpack.unpackb(
            span, raw=False, use_list=False, ext_hook=msgpack.ExtType
        ),
        "  the families' validate(), 7 states": lambda: [
            family.validate(state.fields)  # type: ignore[union-attr]
            for family, _obj, state in plan
        ],
        "restore (of the decoded snapshot)": lambda: rngvault.restore(
            decoded, {n: o for n, o in objects.items() if n not in _GLOBALS}
        ),
        "  the families' capture(), 7 targets (done twice: rollback, verify)": lambda: [
            family.capture(obj)  # type: ignore[union-attr]
            for family, obj, _state in plan
        ],
        "  the families' restore(), 7 targets": lambda: [
            family.restore(obj, state.fields)  # type: ignore[union-attr]
            for family, obj, state in plan
        ],
        "  verify: captured == stored, 7 states": lambda: [
            values_equal(fields, state.fields, exact_types=False)
            for fields, (_family, _obj, state) in zip(captured, plan, strict=True)
        ],
    }
    return interleaved_medians(steps, repeat)


_GLOBALS = frozenset({"python.global", "numpy.global", "torch.cpu"})


if __name__ == "__main__":
    sys.exit(main())
