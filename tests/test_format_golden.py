"""Golden files: snapshots written by format version 1 (scripts/make_golden.py), read from now on.

tests/data/snapshot-v1.msgpack holds every generator family; snapshot-v1.json beside it
records what must be read back: digest, metadata, each state's fields and description, and
known-answer draws after restoring into a fresh generator. These files are never rewritten
for a later version of rngvault: they are what version 1 wrote.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault.families import torch_cuda

DATA = Path(__file__).resolve().parent / "data"
RECORD = json.loads((DATA / "snapshot-v1.json").read_text())
GOLDEN = (DATA / "snapshot-v1.msgpack").read_bytes()
GENERATORS = RECORD["generators"]
RESTORABLE = [name for name, entry in GENERATORS.items() if "target" in entry]


def plain(value: Any) -> Any:
    """A state field as the JSON records it: arrays as lists, bytes as hex."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def namespace_for(entry: dict[str, Any]) -> dict[str, Any]:
    """What the target and draw expressions use; torch only when they need it."""
    namespace: dict[str, Any] = {"np": np, "random": random}
    if "torch" in entry["target"] or "DataLoader" in entry["target"]:
        torch = pytest.importorskip("torch")
        from torch.utils.data import DataLoader, DistributedSampler

        namespace.update(torch=torch, DataLoader=DataLoader, DistributedSampler=DistributedSampler)
    return namespace


def test_golden_file_is_the_recorded_one():
    """The committed file is byte for byte the one the known answers were recorded from."""
    assert hashlib.sha256(GOLDEN).hexdigest() == RECORD["sha256"]


def test_golden_snapshot_decodes_to_the_recorded_values():
    """Version, digest, time, metadata, environment, probes and names read back exactly."""
    snapshot = rngvault.decode(GOLDEN)
    assert snapshot.format_version == RECORD["format_version"] == 1
    assert snapshot.digest == RECORD["digest"]
    assert snapshot.created == RECORD["created"]
    assert snapshot.metadata.to_dict() == RECORD["metadata"]
    assert snapshot.environment == RECORD["environment"]
    assert plain(dict(snapshot.probes)) == RECORD["probes"]
    assert sorted(snapshot.states) == sorted(GENERATORS)


def test_golden_snapshot_encodes_back_to_the_same_bytes():
    """This version's encoder writes format 1 exactly as the golden file has it."""
    assert rngvault.encode(rngvault.decode(GOLDEN)) == GOLDEN


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_golden_state_has_the_recorded_fields_and_position(name):
    """Each state's family, every field and its description (the position) are as recorded."""
    state = rngvault.decode(GOLDEN).states[name]
    entry = GENERATORS[name]
    assert state.family == entry["family"]
    assert plain(dict(state.fields)) == entry["fields"]
    assert state.describe() == entry["describe"]


@pytest.mark.parametrize("name", RESTORABLE)
def test_golden_state_restores_to_the_known_draws(name):
    """Restored into a fresh generator, each state gives the recorded draws (spawned
    children, buffered words, cached normals and DataLoader epochs included)."""
    entry = GENERATORS[name]
    namespace = namespace_for(entry)
    target = eval(entry["target"], namespace)
    snapshot = rngvault.Snapshot({name: rngvault.decode(GOLDEN).states[name]})
    for label, draw in entry["draws"].items():
        report = rngvault.restore(snapshot, {name: target}, include_globals=False)
        assert report[name].verified is True
        assert eval(draw["expr"], {**namespace, "g": target}) == draw["value"], label


def test_golden_cuda_state_is_seed_and_offset():
    """The torch.cuda:0 state reads as its seed and Philox offset."""
    state = rngvault.decode(GOLDEN).states["torch.cuda:0"]
    assert torch_cuda.parse(state.fields["state"]) == (3407, 48)


@pytest.mark.cuda
def test_golden_cuda_state_restores_onto_device_0():
    """On a CUDA machine the golden torch.cuda:0 state is set on device 0 exactly."""
    torch = pytest.importorskip("torch")
    state = rngvault.decode(GOLDEN).states["torch.cuda:0"]
    report = rngvault.restore(rngvault.Snapshot({"torch.cuda:0": state}))
    assert report["torch.cuda:0"].verified is True
    assert torch.cuda.get_rng_state(0).numpy().tobytes() == state.fields["state"]


def test_empty_golden_snapshot_decodes_and_encodes_back():
    """A snapshot with no states and default metadata, as version 1 wrote it."""
    data = (DATA / "empty-v1.msgpack").read_bytes()
    snapshot = rngvault.decode(data)
    assert dict(snapshot.states) == {}
    assert snapshot.metadata == rngvault.Metadata()
    assert snapshot.created == RECORD["created"]
    assert snapshot.digest == hashlib.sha256(b"\x80").hexdigest()  # an empty msgpack map
    assert rngvault.encode(snapshot) == data
