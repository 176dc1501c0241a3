"""Write the golden snapshot files in tests/data/, which the tests decode from now on.

    .venv/bin/python scripts/make_golden.py [--out tests/data]

Writes, deterministically (fixed seeds, a fixed ``created``, fixed metadata):

- ``snapshot-v1.msgpack``: every generator family, as format version 1 writes it;
- ``snapshot-v1.json``: what a reader must find in it: the digest, metadata, environment,
  each generator's position and description, and known-answer draws. Each generator has a
  ``target`` (an expression making a fresh generator to restore into) and ``draws``
  (expression -> the values it gave right after capture); the tests restore into the
  target and check that each expression gives those values again;
- ``empty-v1.msgpack``: a snapshot with no states and default metadata.

Run it again only when the format version changes: the committed files are the record of
what older versions wrote. It needs torch (CPU is enough).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

import rngvault

CREATED = 1767225600.0  # 2026-01-01T00:00:00Z
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "data"

BITGEN_DRAWS = {
    "random": "g.random(3).tolist()",
    "uint32": "g.integers(0, 2**32, size=3, dtype=np.uint32).tolist()",
    "raw": "g.bit_generator.random_raw(2).tolist()",
    "spawn": "[child.bit_generator.random_raw(2).tolist() for child in g.spawn(2)]",
}
TORCH_DRAWS = {
    "randn": "torch.randn(2, generator=g, dtype=torch.float64).tolist()",
    "rand": "torch.rand(3, generator=g, dtype=torch.float64).tolist()",
    "randint": "torch.randint(0, 2**31, (3,), generator=g).tolist()",
}
LOADER = (
    "DataLoader(range(16), batch_size=4, generator=torch.Generator(), sampler="
    "DistributedSampler(range(16), num_replicas=2, rank=0, shuffle=True, seed=0))"
)


def bitgen(name: str, seed: int) -> np.random.Generator:
    """A Generator with a buffered uint32 and one child spawned (Philox mid-buffer)."""
    g = np.random.Generator(getattr(np.random, name)(seed))
    g.random(17)
    g.integers(0, 2**32, dtype=np.uint32)
    g.spawn(1)
    return g


def generators() -> dict[str, tuple[Any, str, dict[str, str]]]:
    """name -> (live generator, target expression, draw expressions)."""
    python = random.Random(20260101)
    for _ in range(100):
        python.random()
    python.gauss(0.0, 1.0)

    legacy = np.random.RandomState(7)
    legacy.random_sample(101)
    legacy.standard_normal()

    cpu = torch.Generator().manual_seed(3407)
    torch.rand(7, generator=cpu)
    torch.randn(1, generator=cpu)

    sampler = DistributedSampler(range(16), num_replicas=2, rank=0, shuffle=True, seed=11)
    sampler.set_epoch(2)
    loader = DataLoader(
        range(16), batch_size=4, sampler=sampler, generator=torch.Generator().manual_seed(5)
    )
    list(loader)  # one epoch: the loader's generator has drawn a base seed

    table: dict[str, tuple[Any, str, dict[str, str]]] = {
        "python.global": (
            python,
            "random.Random(0)",
            {
                "random": "[g.random() for _ in range(3)]",
                "gauss": "[g.gauss(0.0, 1.0) for _ in range(2)]",
                "getrandbits": "g.getrandbits(64)",
            },
        ),
        "numpy.global": (
            legacy,
            "np.random.RandomState(0)",
            {
                "standard_normal": "[float(g.standard_normal()) for _ in range(2)]",
                "random_sample": "g.random_sample(3).tolist()",
                "randint": "g.randint(0, 2**31, size=3).tolist()",
            },
        ),
        "torch.cpu": (cpu, "torch.Generator()", TORCH_DRAWS),
        "loader": (
            loader,
            LOADER,
            {
                "epoch": "[batch.tolist() for batch in g]",
                "generator": "torch.randint(0, 2**31, (3,), generator=g.generator).tolist()",
            },
        ),
    }
    for name, kind, seed in [
        ("augment", "PCG64", 1),
        ("dxsm", "PCG64DXSM", 2),
        ("mt", "MT19937", 3),
        ("philox", "Philox", 4),
        ("sfc", "SFC64", 5),
    ]:
        table[name] = (
            bitgen(kind, seed),
            f"np.random.Generator(np.random.{kind}(0))",
            BITGEN_DRAWS,
        )
    return table


def plain(value: Any) -> Any:
    """A state field as JSON: arrays as lists, bytes as hex."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)

    table = generators()
    snapshot = rngvault.capture(
        {name: g for name, (g, _t, _d) in table.items()},
        **{
            "include_globals": False,
            "metadata": rngvault.Metadata(
                step=1200,
                epoch=3,
                tags=("golden", "v1"),
                metrics={"loss": 0.125, "images": 38400, "note": "fixed", "finite": True},
                rank=1,
                world_size=2,
            ),
            "environment": {"python": "3.11", "numpy": "2.4", "torch": "2.13", "os": "Linux"},
        },
    )
    # A CUDA device's state after 12 kernel launches, written by hand so that no GPU is needed.
    cuda = rngvault.State("torch.cuda", {"state": struct.pack("<QQ", 3407, 48)})
    states = {**snapshot.states, "torch.cuda:0": cuda}
    known: dict[str, Any] = {}
    for name, (g, target, draws) in table.items():
        namespace = {"g": g, "np": np, "torch": torch, "random": random}
        values = {}
        for label, expr in draws.items():
            rngvault.restore(snapshot, {name: g}, include_globals=False)
            values[label] = {"expr": expr, "value": eval(expr, namespace)}
        known[name] = {"target": target, "draws": values}
    probes = {"python.global": known["python.global"]["draws"]["random"]["value"][:2]}
    snapshot = rngvault.Snapshot(
        states=states,
        metadata=snapshot.metadata,
        environment=snapshot.environment,
        created=CREATED,
        probes=probes,
    )
    data = rngvault.encode(snapshot)
    (out / "snapshot-v1.msgpack").write_bytes(data)

    record = {
        "file": "snapshot-v1.msgpack",
        "sha256": hashlib.sha256(data).hexdigest(),
        "format_version": rngvault.decode(data).format_version,  # 1: nothing of version 2
        "digest": snapshot.digest,
        "created": CREATED,
        "metadata": snapshot.metadata.to_dict(),
        "environment": dict(snapshot.environment),
        "probes": probes,
        "generated_with": {
            "python": ".".join(map(str, sys.version_info[:3])),
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
        "generators": {
            name: {
                "family": state.family,
                "describe": state.describe(),
                "fields": plain(dict(state.fields)),
                **known.get(name, {}),
            }
            for name, state in states.items()
        },
    }
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    # Lists of numbers (MT keys, draws) on one line each.
    text = re.sub(
        r"\[\s+([-\d.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )
    (out / "snapshot-v1.json").write_text(text)

    empty = rngvault.encode(rngvault.Snapshot({}, created=CREATED))
    (out / "empty-v1.msgpack").write_bytes(empty)
    print(
        f"wrote {out}/snapshot-v1.msgpack ({len(data)} bytes), snapshot-v1.json, empty-v1.msgpack"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
