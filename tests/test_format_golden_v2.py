"""Golden files: a snapshot written by format version 2 (scripts/make_golden.py), read from now on.

tests/data/snapshot-v2.msgpack holds what version 2 added, each loader at batch 5 of its
second epoch: a DataLoader with its own generator, a DataLoader on the global torch
generator (with the ``torch.cpu`` state it needs), a torchdata StatefulDataLoader; and two
version 1 families. snapshot-v2.json beside it records what must be read back, and for each
loader the batches the original went on to yield: the rest of that epoch, then the next
one. These files are never rewritten for a later version of rngvault.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from tests.test_format_golden import plain

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")

DATA = Path(__file__).resolve().parent / "data"
RECORD = json.loads((DATA / "snapshot-v2.json").read_text())
GOLDEN = (DATA / "snapshot-v2.msgpack").read_bytes()
GENERATORS = RECORD["generators"]
LOADERS = sorted(name for name, entry in GENERATORS.items() if "batches" in entry)
DATALOADERS = [name for name in LOADERS if GENERATORS[name]["family"] == "dataloader"]
STATEFUL = [name for name in LOADERS if name not in DATALOADERS]
DRAWN = sorted(name for name, entry in GENERATORS.items() if "draws" in entry)


def states() -> dict[str, rngvault.State]:
    return dict(rngvault.decode(GOLDEN).states)


def namespace_for(name: str) -> dict[str, Any]:
    """What the target and draw expressions use; torch and torchdata only when needed."""
    namespace: dict[str, Any] = {"np": np}
    if "torch" in GENERATORS[name]["target"] or name in LOADERS:
        torch = pytest.importorskip("torch")
        from torch.utils.data import DataLoader

        namespace.update(torch=torch, DataLoader=DataLoader)
    if name in STATEFUL:
        stateful = pytest.importorskip("torchdata.stateful_dataloader")
        namespace["StatefulDataLoader"] = stateful.StatefulDataLoader
    return namespace


@pytest.fixture
def global_torch():
    """torch's global CPU generator, put back after the test (the loaders' restores set it)."""
    torch = pytest.importorskip("torch")
    saved = torch.default_generator.get_state()
    yield torch
    torch.default_generator.set_state(saved)


def cpu_tensor(torch: Any, state: bytes) -> Any:
    return torch.frombuffer(bytearray(state), dtype=torch.uint8)


def test_golden_v2_file_is_the_recorded_one():
    """The committed file is byte for byte the one the known answers were recorded from."""
    assert hashlib.sha256(GOLDEN).hexdigest() == RECORD["sha256"]


def test_golden_v2_decodes_to_the_recorded_values():
    """Version 2, digest, time, metadata, environment, probes and names read back exactly."""
    snapshot = rngvault.decode(GOLDEN)
    assert snapshot.format_version == RECORD["format_version"] == 2
    assert snapshot.digest == RECORD["digest"]
    assert snapshot.created == RECORD["created"]
    assert snapshot.metadata.to_dict() == RECORD["metadata"]
    assert snapshot.environment == RECORD["environment"]
    assert plain(dict(snapshot.probes)) == RECORD["probes"]
    assert sorted(snapshot.states) == sorted(GENERATORS)


def test_golden_v2_encodes_back_to_the_same_bytes():
    """This version's encoder writes the version 2 file exactly as it is."""
    assert rngvault.encode(rngvault.decode(GOLDEN)) == GOLDEN


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_golden_v2_state_has_the_recorded_fields_and_position(name):
    """Each state's family, every field (a loader's epoch map and torchdata's entries
    included) and its description are as recorded."""
    state = states()[name]
    entry = GENERATORS[name]
    assert state.family == entry["family"]
    assert plain(dict(state.fields)) == entry["fields"]
    assert state.describe() == entry["describe"]


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_golden_v2_only_the_mid_epoch_loaders_need_version_2(name):
    """Each loader alone still needs version 2 (it holds what version 2 added); each version
    1 family alone is written as version 1: the file mixes both."""
    data = rngvault.encode(rngvault.Snapshot({name: states()[name]}, created=RECORD["created"]))
    assert rngvault.decode(data).format_version == (2 if name in LOADERS else 1)


def test_golden_v2_loaders_are_mid_epoch():
    """The DataLoaders record batch 5 of an epoch; the one on the global generator records
    that generator's state at the epoch's start and the snapshot holds torch.cpu."""
    found = states()
    for name in DATALOADERS:
        epoch = found[name].fields["epoch"]
        assert epoch["batches"] == 5
        assert epoch["unsupported"] is None
        assert (found[name].fields["generator"] is None) == (epoch["global"] is not None)
    assert any(found[name].fields["generator"] is None for name in DATALOADERS)
    assert "torch.cpu" in found
    assert [found[name].family for name in STATEFUL] == ["torchdata.stateful_dataloader"]


@pytest.mark.parametrize("name", LOADERS)
def test_golden_v2_loader_resumes_with_the_recorded_batches(name, global_torch):
    """Restored with torch.cpu into a fresh loader, the loader yields the rest of the epoch
    the original was in, then the original's next epoch."""
    entry = GENERATORS[name]
    namespace = namespace_for(name)
    target = eval(entry["target"], namespace)
    found = states()
    snapshot = rngvault.Snapshot({name: found[name], "torch.cpu": found["torch.cpu"]})
    report = rngvault.restore(
        snapshot,
        {name: target, "torch.cpu": global_torch.default_generator},
        include_globals=False,
        strict=True,
    )
    assert report[name].verified is True
    batches = entry["batches"]
    assert eval(batches["expr"], {**namespace, "g": target}) == batches["rest_of_epoch"]
    assert eval(batches["expr"], {**namespace, "g": target}) == batches["next_epoch"]


@pytest.mark.parametrize("name", DRAWN)
def test_golden_v2_generator_restores_to_the_known_draws(name):
    """The version 1 families of the file restore into fresh generators exactly."""
    entry = GENERATORS[name]
    namespace = namespace_for(name)
    target = eval(entry["target"], namespace)
    snapshot = rngvault.Snapshot({name: states()[name]})
    for label, draw in entry["draws"].items():
        report = rngvault.restore(snapshot, {name: target}, include_globals=False)
        assert report[name].verified is True
        assert eval(draw["expr"], {**namespace, "g": target}) == draw["value"], label


@pytest.mark.parametrize("name", DATALOADERS)
def test_golden_v2_dataloader_position_replays_with_torch_alone(name, global_torch):
    """docs/format.md's replay, done with torch and no rngvault restore, gives the recorded
    batches: set the epoch-start states, create the iterator, take `batches` batches, set
    the generators to the state's own and to torch.cpu, go on."""
    torch = global_torch
    entry = GENERATORS[name]
    target = eval(entry["target"], namespace_for(name))
    found = states()
    fields, epoch = found[name].fields, found[name].fields["epoch"]
    assert fields["sampler_generator"] is None  # the sampler shuffles with the loader's
    if epoch["generator"] is not None:
        target.generator.set_state(cpu_tensor(torch, epoch["generator"]))
    if epoch["global"] is not None:
        torch.default_generator.set_state(cpu_tensor(torch, epoch["global"]))
    iterator = iter(target)
    for _ in range(epoch["batches"]):
        next(iterator)
    if fields["generator"] is not None:
        target.generator.set_state(cpu_tensor(torch, fields["generator"]))
    torch.default_generator.set_state(cpu_tensor(torch, found["torch.cpu"].fields["state"]))
    assert [batch.tolist() for batch in iterator] == entry["batches"]["rest_of_epoch"]
    assert [batch.tolist() for batch in target] == entry["batches"]["next_epoch"]


def state_dict_from_entries(torch: Any, entries: Any) -> Any:
    """docs/format.md's flat entries back into torchdata's state_dict tree."""
    children: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for entry in entries:
        path = tuple(entry[0])
        if path:
            children[path[:-1]].append(entry)

    def build(path: tuple[Any, ...], kind: str, value: Any) -> Any:
        items = [(p[-1], build(tuple(p), k, v)) for p, k, v in children[path]]
        if kind == "dict":
            return dict(items)
        if kind in ("list", "tuple"):
            return (list if kind == "list" else tuple)(item for _, item in items)
        if kind == "tensor":
            dtype, shape, data = value
            return torch.frombuffer(bytearray(data), dtype=getattr(torch, dtype)).reshape(shape)
        return value

    (root_path, root_kind, root_value), *_ = entries
    assert tuple(root_path) == () and root_kind == "dict"
    return build((), root_kind, root_value)


@pytest.mark.parametrize("name", STATEFUL)
def test_golden_v2_stateful_position_loads_with_torchdata_alone(name, global_torch):
    """The entries, rebuilt into a state_dict as docs/format.md describes and given to
    torchdata's own load_state_dict, resume at the recorded rest of the epoch."""
    entry = GENERATORS[name]
    target = eval(entry["target"], namespace_for(name))
    fields = states()[name].fields
    target.load_state_dict(state_dict_from_entries(global_torch, fields["entries"]))
    assert [batch.tolist() for batch in target] == entry["batches"]["rest_of_epoch"]


def claims_version_1(data: bytes) -> bytes:
    """The same body saying version 1 (its last key; the digest covers the states only)."""
    assert data.endswith(b"\xa7version\x02")
    return data[:-1] + b"\x01"


def test_golden_v2_body_claiming_version_1_is_refused():
    """The golden body with its version changed to 1 is refused: its states need 2."""
    with pytest.raises(rngvault.DecodeError, match="uses what format version 2 added"):
        rngvault.decode(claims_version_1(GOLDEN))


@pytest.mark.parametrize("name", LOADERS)
def test_golden_v2_state_in_a_version_1_body_is_refused(name):
    """Each state version 2 added, alone in a body that says version 1, is refused by name."""
    data = rngvault.encode(rngvault.Snapshot({name: states()[name]}, created=RECORD["created"]))
    with pytest.raises(rngvault.DecodeError, match=re.escape(f"states[{name!r}]") + ".*version 1"):
        rngvault.decode(claims_version_1(data))
