"""Write the golden snapshot files in tests/data/, which the tests decode from now on.

    .venv/bin/python scripts/make_golden.py [--out tests/data] [--version {1,2}]...

Writes, deterministically (fixed seeds, a fixed ``created``, fixed metadata), the files of
each format version asked for (both by default):

- ``snapshot-v1.msgpack``: every generator family, as format version 1 writes it;
- ``snapshot-v1.json``: what a reader must find in it: the digest, metadata, environment,
  each generator's position and description, and known-answer draws. Each generator has a
  ``target`` (an expression making a fresh generator to restore into) and ``draws``
  (expression -> the values it gave right after capture); the tests restore into the
  target and check that each expression gives those values again;
- ``empty-v1.msgpack``: a snapshot with no states and default metadata;
- ``snapshot-v2.msgpack``: what format version 2 added, each loader mid-epoch (batch 5 of
  its second epoch): a DataLoader with its own generator, a DataLoader on the global torch
  generator (with the ``torch.cpu`` state it needs), a torchdata ``StatefulDataLoader``;
  and two version 1 families (``torch.cpu``, a NumPy ``Generator``);
- ``snapshot-v2.json``: the same record, where each loader has ``target`` and ``batches``:
  ``expr`` evaluated twice after a restore gives ``rest_of_epoch`` (the batches the
  original loader went on to yield) and then ``next_epoch`` (its next epoch's).

Run it again only when a format version is added: the committed files are the record of
what older versions wrote, and this script must write them byte for byte as committed
(``git diff --stat tests/data`` after running it shows nothing). It needs torch (CPU is
enough), and torchdata for version 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import struct
import sys
import warnings
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


V2_LOADERS = {
    "loader.own": (
        "DataLoader(range(40), batch_size=3, shuffle=True, generator=torch.Generator())"
    ),
    "loader.global": "DataLoader(range(40), batch_size=4, shuffle=True)",
    "loader.stateful": (
        "StatefulDataLoader(range(40), batch_size=3, shuffle=True, generator=torch.Generator())"
    ),
}
EPOCH = "[batch.tolist() for batch in g]"  # one epoch (or its rest) of a loader, as lists


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


def write_record(path: Path, record: dict[str, Any]) -> None:
    """The JSON record, with lists of numbers (MT keys, draws, batches) on one line each."""
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    text = re.sub(
        r"\[\s+([-\d.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--version",
        type=int,
        choices=(1, 2),
        action="append",
        help="write the files of this format version only (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    versions = set(args.version or (1, 2))
    if 1 in versions:
        write_v1(out)
    if 2 in versions:
        write_v2(out)
    return 0


def write_v1(out: Path) -> None:
    """snapshot-v1.msgpack, snapshot-v1.json and empty-v1.msgpack."""
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
    write_record(out / "snapshot-v1.json", record)

    empty = rngvault.encode(rngvault.Snapshot({}, created=CREATED))
    (out / "empty-v1.msgpack").write_bytes(empty)
    print(
        f"wrote {out}/snapshot-v1.msgpack ({len(data)} bytes), snapshot-v1.json, empty-v1.msgpack"
    )


def v2_loaders() -> tuple[dict[str, Any], dict[str, Any]]:
    """The three loaders, each stopped after 5 batches of its second epoch, with their
    iterators; the global torch generator seeded first (a loader draws from it)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    torch.manual_seed(20260102)
    loaders = {
        "loader.own": DataLoader(
            range(40), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(2026)
        ),
        "loader.global": DataLoader(range(40), batch_size=4, shuffle=True),
        "loader.stateful": StatefulDataLoader(
            range(40), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(7)
        ),
    }
    for name in ("loader.own", "loader.global"):
        rngvault.families.dataloader.watch(loaders[name])  # as Vault.track does: see epochs
    iterators = {}
    for name, loader in loaders.items():
        list(loader)  # the first epoch
        iterators[name] = iter(loader)
        for _ in range(5):
            next(iterators[name])
    return loaders, iterators


def write_v2(out: Path) -> None:
    """snapshot-v2.msgpack and snapshot-v2.json."""
    warnings.filterwarnings("ignore", message=".*set_vital.*")  # torchdata's own, harmless
    loaders, iterators = v2_loaders()
    augment = bitgen("PCG64", 6)
    snapshot = rngvault.capture(
        {**loaders, "torch.cpu": torch.default_generator, "augment": augment},
        include_globals=False,
        metadata=rngvault.Metadata(
            step=18,
            epoch=1,
            tags=("golden", "v2"),
            metrics={"loss": 0.5, "note": "mid-epoch"},
        ),
        environment={
            "python": "3.11",
            "numpy": "2.4",
            "torch": "2.13",
            "torchdata": "0.11",
            "os": "Linux",
        },
    )
    known: dict[str, Any] = {}
    captured_cpu = torch.default_generator.get_state()
    for name, target in V2_LOADERS.items():
        # Each loader's batches from the global generator as captured, whatever the others drew.
        torch.default_generator.set_state(captured_cpu)
        loader, iterator = loaders[name], iterators[name]
        batches = {
            "expr": EPOCH,
            "rest_of_epoch": [batch.tolist() for batch in iterator],
            "next_epoch": eval(EPOCH, {"g": loader}),
        }
        known[name] = {"target": target, "batches": batches}
    for name, (g, target, draws) in {
        "torch.cpu": (torch.Generator(), "torch.Generator()", TORCH_DRAWS),
        "augment": (augment, "np.random.Generator(np.random.PCG64(0))", BITGEN_DRAWS),
    }.items():
        namespace = {"g": g, "np": np, "torch": torch}
        values = {}
        for label, expr in draws.items():
            rngvault.restore(snapshot, {name: g}, include_globals=False)
            values[label] = {"expr": expr, "value": eval(expr, namespace)}
        known[name] = {"target": target, "draws": values}
    # The dataloader probe: the base seed the next iter() draws from the loader's generator.
    own = torch.Generator()
    own.set_state(
        torch.frombuffer(
            bytearray(snapshot.states["loader.own"].fields["generator"]), dtype=torch.uint8
        )
    )
    probes = {"loader.own": [int(torch.empty((), dtype=torch.int64).random_(generator=own))]}
    snapshot = rngvault.Snapshot(
        states=snapshot.states,
        metadata=snapshot.metadata,
        environment=snapshot.environment,
        created=CREATED,
        probes=probes,
    )
    data = rngvault.encode(snapshot)
    (out / "snapshot-v2.msgpack").write_bytes(data)
    torchdata = sys.modules["torchdata"]
    record = {
        "file": "snapshot-v2.msgpack",
        "sha256": hashlib.sha256(data).hexdigest(),
        "format_version": rngvault.decode(data).format_version,
        "digest": snapshot.digest,
        "created": CREATED,
        "metadata": snapshot.metadata.to_dict(),
        "environment": dict(snapshot.environment),
        "probes": probes,
        "generated_with": {
            "python": ".".join(map(str, sys.version_info[:3])),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torchdata": getattr(torchdata, "__version__", "unknown"),
        },
        "generators": {
            name: {
                "family": state.family,
                "describe": state.describe(),
                "fields": plain(dict(state.fields)),
                **known[name],
            }
            for name, state in snapshot.states.items()
        },
    }
    write_record(out / "snapshot-v2.json", record)
    print(f"wrote {out}/snapshot-v2.msgpack ({len(data)} bytes), snapshot-v2.json")


if __name__ == "__main__":
    raise SystemExit(main())
