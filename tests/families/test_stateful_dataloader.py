"""rngvault/families/stateful_dataloader.py: torchdata's StatefulDataLoader, through its own
state_dict(), stored as flat entries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

import rngvault
from rngvault.families import families, family_of
from rngvault.families import stateful_dataloader as sdl
from tests.conftest import ROOT, python_env

torch = pytest.importorskip("torch")
pytest.importorskip("torchdata.stateful_dataloader")
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
FAMILY = families()[sdl.NAME]


class Items(Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> int:
        return index


def make_loader(seed: int = 1, num_workers: int = 0, **kwargs: Any) -> StatefulDataLoader:
    generator = torch.Generator().manual_seed(seed)
    return StatefulDataLoader(
        Items(), batch_size=3, shuffle=True, generator=generator, num_workers=num_workers, **kwargs
    )


def batches(iterable: Any) -> list[list[int]]:
    return [batch.tolist() for batch in iterable]


def mid_epoch(loader: StatefulDataLoader, taken: int = 7) -> Any:
    """The loader's iterator after ``taken`` batches of its second epoch."""
    batches(loader)
    iterator = iter(loader)
    for _ in range(taken):
        next(iterator)
    return iterator


@pytest.fixture(scope="module")
def two_workers() -> dict[str, Any]:
    """Fields of a 2-worker loader at batch 7 of its second epoch."""
    loader = make_loader(num_workers=2)
    iterator = mid_epoch(loader)
    fields = FAMILY.capture(loader)
    del iterator
    return fields


def index_of(fields: dict[str, Any], *path: Any) -> int:
    return next(i for i, entry in enumerate(fields["entries"]) if entry[0] == path)


def replaced(fields: dict[str, Any], index: int, entry: Any) -> dict[str, Any]:
    entries = list(fields["entries"])
    entries[index] = entry
    return {"entries": tuple(entries)}


def test_a_stateful_dataloader_is_its_own_family_and_a_plain_one_is_not():
    """StatefulDataLoader subclasses DataLoader: the registry finds this family first."""
    assert family_of(make_loader()).name == sdl.NAME
    assert family_of(DataLoader(Items())).name == "dataloader"


def test_two_worker_state_survives_encode_decode_and_says_where_it_is(two_workers):
    """A captured mid-epoch state of a 2-worker loader comes back from encode/decode
    equal; its description names the batch and the workers; it fits the format's bounds."""
    snapshot = rngvault.Snapshot({"loader": rngvault.State(sdl.NAME, two_workers)}, created=0.0)
    data = rngvault.encode(snapshot)
    decoded = rngvault.decode(data)
    assert decoded.states["loader"] == snapshot.states["loader"]
    text = decoded.states["loader"].describe()
    assert "7 batches of the epoch yielded, 2 workers" in text
    print(f"2-worker state: {len(two_workers['entries'])} entries, snapshot {len(data)} bytes")


# (shuffle, a torch.Generator of its own): without one, torchdata's RandomSampler seeds a
# generator of its own from torch's global one, and each iter() draws the base seed there
LOADERS = {
    "own generator, shuffled": (True, True),
    "no generator, shuffled": (True, False),
    "no generator, in order": (False, False),
}


def make_kind(kind: str, seed: int, num_workers: int) -> StatefulDataLoader:
    shuffle, own = LOADERS[kind]
    return StatefulDataLoader(
        Items(),
        batch_size=3,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if own else None,
        num_workers=num_workers,
    )


def with_draws(iterable: Any) -> list[tuple[list[int], float]]:
    """Each batch, and a draw from torch's global generator right after it."""
    return [(batch.tolist(), torch.rand(()).item()) for batch in iterable]


@pytest.mark.parametrize("taken", [7, 0], ids=["batch 7", "between epochs"])
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("kind", list(LOADERS))
def test_restore_gives_the_uninterrupted_batches_and_global_draws(kind, num_workers, taken):
    """Captured (with the global generators) at batch 7 of epoch 1, or after epoch 0, and
    restored into a loader built after another seed: the rest of that epoch and the next
    epochs are the uninterrupted loader's, and so is every draw from torch's global
    generator between the batches (the resumed iterator draws a base seed that the
    interrupted run had drawn already; in one process with a generator of its own,
    torchdata alone leaves that generator one draw behind)."""
    torch.manual_seed(1)
    loader = make_kind(kind, 1, num_workers)
    with_draws(loader)
    iterator = iter(loader) if taken else iter(())
    with_draws(islice(iterator, taken))
    snapshot = rngvault.capture({"loader": loader})
    expected = with_draws(iterator) + with_draws(loader) + with_draws(loader)
    torch.manual_seed(2)
    other = make_kind(kind, 99, num_workers)
    report = rngvault.restore(snapshot, {"loader": other})
    assert "loader" in report.restored
    resumed = [each for _ in range(3 if taken else 2) for each in with_draws(other)]
    assert len(resumed) == len(expected) == (14 - taken) + 14 * (2 if taken else 1)
    assert resumed == expected


def test_restore_while_an_iterator_runs_warns_and_applies_from_the_next_iter():
    """torchdata applies a loaded state at the next iter(): a restore during an epoch warns,
    the running iterator goes on, the next iter() resumes at the restored position."""
    loader = make_loader()
    iterator = mid_epoch(loader, 3)
    snapshot = rngvault.capture({"loader": loader}, include_globals=False)
    next(iterator)
    reference = mid_epoch(make_loader(), 3)
    from_3 = batches(reference)
    with pytest.warns(rngvault.LateRestoreWarning, match="next iter"):
        rngvault.restore(snapshot, {"loader": loader}, include_globals=False)
    assert batches(iterator) == from_3[1:]
    assert batches(loader) == from_3


def test_a_restored_state_not_yet_iterated_is_captured_without_starting_workers():
    """After a restore, before iter(), capture reads the pending state (torchdata's
    state_dict() would start the workers to find it) and the report verifies it."""
    loader = make_loader(num_workers=2)
    iterator = mid_epoch(loader)
    snapshot = rngvault.capture({"loader": loader}, include_globals=False)
    del iterator
    other = make_loader(num_workers=2)
    rngvault.restore(snapshot, {"loader": other}, include_globals=False)
    assert other._iterator is None
    assert FAMILY.capture(other) == snapshot.states["loader"].fields
    assert other._iterator is None


def test_distance_counts_batches_within_an_epoch_and_the_generator_across_epochs():
    loader = make_loader()
    iterator = mid_epoch(loader, 2)
    a = FAMILY.capture(loader)
    for _ in range(5):
        next(iterator)
    b = FAMILY.capture(loader)
    assert FAMILY.distance(a, b, 10_000) == rngvault._distance.by_sign(5, "batches", "same epoch")
    assert FAMILY.distance(b, a, 10_000).distance == -5
    batches(iterator)
    next(iter(loader))
    later = FAMILY.distance(a, FAMILY.capture(loader), 10_000)
    assert later.status == "advanced" and "another epoch" in later.detail


def test_derive_keeps_the_position_and_replaces_the_generator_and_seeds(two_workers):
    import numpy as np

    derived = FAMILY.derive(two_workers, np.random.SeedSequence(5))
    FAMILY.validate(derived)
    assert FAMILY.describe(derived).startswith("7 batches of the epoch yielded, 2 workers")
    changed = [
        a[0] for a, b in zip(two_workers["entries"], derived["entries"], strict=True) if a != b
    ]
    assert ("_snapshot", "_main_snapshot", "_base_seed") in changed
    assert any(path[-1] == "generator" for path in changed)


def test_capture_refuses_values_it_cannot_store_naming_where():
    """A dataset whose state holds something outside the stored kinds (a set) cannot be
    captured; the error names the path inside the state."""

    class WithSet(Items):
        def state_dict(self) -> dict[str, Any]:
            return {"seen": {1, 2}}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass

    loader = StatefulDataLoader(WithSet(), batch_size=3)
    with pytest.raises(rngvault.CaptureError, match="dataset_state/seen"):
        FAMILY.capture(loader)


def test_target_with_other_workers_or_without_shuffling_is_refused(two_workers):
    snapshot = rngvault.Snapshot({"loader": rngvault.State(sdl.NAME, two_workers)})
    for target, words in [
        (make_loader(num_workers=0), "num_workers=2"),
        (StatefulDataLoader(Items(), batch_size=3, num_workers=2), "shuffled"),
        (StatefulDataLoader(list(range(6)), batch_size=3, shuffle=True, num_workers=2), "has 2"),
    ]:
        with pytest.raises(rngvault.RestoreError, match=words):
            rngvault.restore(snapshot, {"loader": target}, include_globals=False)


# -- hostile states ------------------------------------------------------------------------------

GENERATOR = (
    "_snapshot",
    "_main_snapshot",
    "_sampler_iter_state",
    "sampler_iter_state",
    "generator",
)


def hostile(fields: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Name -> (fields, the field the StateError must name)."""
    entries = fields["entries"]
    gen = index_of(fields, *GENERATOR)
    _path, _kind, (dtype, shape, data) = entries[gen]
    unseeded = bytearray(data)
    unseeded[12] = 0
    last = index_of(fields, "_snapshot", "_last_yielded_worker_id")
    worker = index_of(fields, "_snapshot", "_worker_snapshots", "worker_1")
    step = index_of(fields, "_snapshot", "_snapshot_step")
    dicts = [((f"d{i}",), "dict", None) for i in range(sdl.MAX_ENTRIES)]
    tensor = (("t",), "tensor", ("uint8", (4,), b"1234"))
    return {
        "not an array": ({"entries": {"a": 1}}, "entries"),
        "extra field": ({**fields, "pickle": b"x"}, "pickle"),
        "too many entries": ({"entries": (entries[0], *dicts)}, "entries"),
        "entry not a triple": (replaced(fields, 3, (("x",), "int")), "entries[3]"),
        "unknown kind": (replaced(fields, 3, (entries[3][0], "object", None)), "entries[3].kind"),
        "int as str": (replaced(fields, step, (entries[step][0], "int", "7")), "entries["),
        "negative counter": (replaced(fields, step, (entries[step][0], "int", -1)), "entries["),
        "int beyond 64 bits": (
            replaced(fields, step, (entries[step][0], "int", 2**64)),
            "entries[",
        ),
        "float key": (replaced(fields, 3, ((1.5,), "none", None)), "entries[3].path"),
        "orphan": (replaced(fields, 3, (("nowhere", "x"), "none", None)), "entries[3].path"),
        "duplicate path": (replaced(fields, 3, entries[2]), "entries[3].path"),
        "root twice": (replaced(fields, 3, ((), "dict", None)), "entries[3].path"),
        "unknown dtype": (
            replaced(fields, gen, (GENERATOR, "tensor", ("complex64", shape, data))),
            f"entries[{gen}].value.dtype",
        ),
        "short tensor data": (
            replaced(fields, gen, (GENERATOR, "tensor", (dtype, shape, data[:-1]))),
            f"entries[{gen}].value.data",
        ),
        "huge shape": (
            replaced(fields, gen, (GENERATOR, "tensor", (dtype, (2**40,), data))),
            f"entries[{gen}].value.shape",
        ),
        "too much data": (
            replaced(fields, gen, (GENERATOR, "tensor", (dtype, (40_000,), bytes(40_000)))),
            "entries[",
        ),
        "too many tensors": (
            {"entries": (entries[0], *((((f"t{i}",), *tensor[1:])) for i in range(9)))},
            "entries[",
        ),
        "unseeded sampler generator": (
            replaced(fields, gen, (GENERATOR, "tensor", (dtype, shape, bytes(unseeded)))),
            f"entries[{gen}].value.data.seeded",
        ),
        "worker id out of range": (
            replaced(fields, last, (entries[last][0], "int", 2**40)),
            f"entries[{last}].value",
        ),
        "a worker missing": (
            replaced(
                fields, worker, (("_snapshot", "_worker_snapshots", "worker_9"), "dict", None)
            ),
            "entries[",
        ),
    }


def test_hostile_states_are_refused_naming_the_field(two_workers):
    """Each corrupted state is refused by validate with a StateError naming the field, and
    by decode (a DecodeError) when it arrives in a snapshot."""
    cases = hostile(two_workers)
    for name, (fields, field) in cases.items():
        with pytest.raises(rngvault.StateError) as refused:
            FAMILY.validate(fields)
        assert refused.value.field is not None, name
        assert refused.value.field.startswith(field), (name, refused.value.field)
        try:
            snapshot = rngvault.Snapshot({"g": rngvault.State(sdl.NAME, fields)}, created=0.0)
            data = rngvault.encode(snapshot)
        except (rngvault.StateError, rngvault.EncodeError, TypeError, ValueError):
            continue  # not even encodable: nothing to decode
        with pytest.raises(rngvault.DecodeError):
            rngvault.decode(data)


def after_two_batches(shuffle: bool) -> dict[str, Any]:
    """Fields of a one-process loader after 2 batches of its first epoch."""
    loader = make_loader() if shuffle else StatefulDataLoader(Items(), batch_size=3)
    iterator = iter(loader)
    next(iterator)
    next(iterator)
    return FAMILY.capture(loader)


def retyped(fields: dict[str, Any], path: tuple[Any, ...], kind: str, value: Any = None) -> Any:
    """The fields with the node at ``path`` made a ``kind`` leaf (its items dropped; added
    last when there is none), or with no node there when ``kind`` is None."""
    entries = [entry for entry in fields["entries"] if entry[0][: len(path)] != path]
    if kind is not None:
        at = next((i for i, entry in enumerate(fields["entries"]) if entry[0] == path), None)
        entries.insert(len(entries) if at is None else at, (path, kind, value))
    assert len(entries) != len(fields["entries"]) or kind is not None
    return {"entries": tuple(entries)}


MAIN = ("_snapshot", "_main_snapshot")
WORKER = ("_snapshot", "_worker_snapshots", "worker_0")


def wrong_kinds(
    shuffled: dict[str, Any], in_order: dict[str, Any], workers: dict[str, Any]
) -> dict[str, tuple[dict[str, Any], str]]:
    """Name -> (fields with a key torchdata reads missing or of a kind it cannot use, the
    path the error must name: an empty dict's missing keys are inside that path)."""
    cases: dict[str, tuple[dict[str, Any], tuple[str, ...], str | None, Any]] = {
        "sampler iterator state an int": (in_order, ("_sampler_iter_state",), "int", 5),
        "sampler iterator state a str": (in_order, ("_sampler_iter_state",), "str", "x"),
        "index sampler state an int": (in_order, ("_index_sampler_state",), "int", 1),
        "len called a str": (in_order, ("_IterableDataset_len_called",), "str", "3"),
        "shared seed a float": (in_order, ("_shared_seed",), "float", 1.5),
        "fetcher state an int": (in_order, ("fetcher_state",), "int", 3),
        "fetcher state without its keys": (in_order, ("fetcher_state",), "dict", None),
        "finished an int": (in_order, ("_iterator_finished",), "int", 0),
        "num yielded none": (in_order, ("_num_yielded",), "none", None),
        "samples yielded missing": (in_order, ("_sampler_iter_state", "samples_yielded"), None, 0),
        "sampler state an int": (
            in_order,
            ("_sampler_iter_state", "sampler_state"),
            "int",
            1,
        ),
        "random sampler state a list": (
            shuffled,
            ("_sampler_iter_state", "sampler_iter_state"),
            "list",
            None,
        ),
        "random sampler yielded missing": (
            shuffled,
            ("_sampler_iter_state", "sampler_iter_state", "yielded"),
            None,
            None,
        ),
        "snapshot an int": (workers, ("_snapshot",), "int", 1),
        "main snapshot a list": (workers, MAIN, "list", None),
        "worker snapshots a tuple": (workers, ("_snapshot", "_worker_snapshots"), "tuple", None),
        "a worker an int": (workers, WORKER, "int", 0),
        "a worker without its dataset state": (workers, (*WORKER, "dataset_state"), None, None),
        "worker id a str": (workers, (*WORKER, "worker_id"), "str", "0"),
        "a worker's fetcher state a str": (workers, (*WORKER, "fetcher_state"), "str", "x"),
        "a worker's fetcher state without its keys": (
            workers,
            (*WORKER, "fetcher_state"),
            "dict",
            None,
        ),
        "base seed none": (workers, (*MAIN, "_base_seed"), "none", None),
        # worker 1 would seed torch with 2**64 and die
        "base seed beyond int64": (workers, (*MAIN, "_base_seed"), "int", 2**64 - 1),
        "main shared seed a str": (workers, (*MAIN, "_shared_seed"), "str", "1"),
        "main sampler iterator state an int": (workers, (*MAIN, "_sampler_iter_state"), "int", 5),
        "main index sampler state a tuple": (
            workers,
            (*MAIN, "_index_sampler_state"),
            "tuple",
            None,
        ),
        "last worker id none": (workers, ("_snapshot", "_last_yielded_worker_id"), "none", None),
        "steps since snapshot a float": (workers, ("_steps_since_snapshot",), "float", 0.0),
        "multi-worker finished none": (workers, ("_iterator_finished",), "none", None),
    }
    return {
        name: (retyped(fields, path, kind, value), "/".join(path))
        for name, (fields, path, kind, value) in cases.items()
    }


def test_keys_torchdata_reads_missing_or_of_another_kind_are_refused_naming_the_path(
    two_workers,
):
    """A state whose keys torchdata's load_state_dict or iterator index is missing one, or
    holds a kind there that torchdata cannot use (which restored "ok" and then failed the
    next iter() with a TypeError), is refused by validate with a StateError naming the
    path, and by decode."""
    cases = wrong_kinds(after_two_batches(True), after_two_batches(False), two_workers)
    for name, (fields, path) in cases.items():
        with pytest.raises(rngvault.StateError) as refused:
            FAMILY.validate(fields)
        assert path in str(refused.value), (name, str(refused.value))
        assert (refused.value.field or "").startswith("entries"), name
        data = rngvault.encode(rngvault.Snapshot({"g": rngvault.State(sdl.NAME, fields)}))
        with pytest.raises(rngvault.DecodeError, match=path.split("/")[-1]):
            rngvault.decode(data)


def test_a_sampler_state_of_another_kind_is_refused_before_the_loader_is_touched():
    """The state of a loader in order after 2 batches, its sampler iterator state made an
    int: decode refuses it; restoring it refuses it, and the target loader goes on as if
    nothing happened (its next iter() starts an epoch)."""
    fields = retyped(after_two_batches(False), ("_sampler_iter_state",), "int", 5)
    snapshot = rngvault.Snapshot({"loader": rngvault.State(sdl.NAME, fields)})
    with pytest.raises(rngvault.DecodeError, match="_sampler_iter_state"):
        rngvault.decode(rngvault.encode(snapshot))
    target = StatefulDataLoader(Items(), batch_size=3)
    with pytest.raises(rngvault.RestoreError, match="_sampler_iter_state"):
        rngvault.restore(snapshot, {"loader": target}, include_globals=False)
    assert next(iter(target)).tolist() == [0, 1, 2]


def test_a_worker_state_of_none_starts_that_worker_afresh_and_is_accepted(two_workers):
    """torchdata starts a worker whose state is None as a new one: such a state is valid."""
    fields = retyped(two_workers, WORKER, "none")
    FAMILY.validate(fields)


# -- the resume in a fresh process ---------------------------------------------------------------

SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore", message=".*set_vital.*")
import torch
from torch.utils.data import Dataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader
import rngvault


class Items(Dataset):
    # each item: its index, the worker that loaded it and that worker's seed
    def __len__(self):
        return 46

    def __getitem__(self, index):
        info = get_worker_info()
        return torch.tensor([index, info.id, info.seed % 2**62])


def run(mode, store):
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1234)
    loader = StatefulDataLoader(
        Items(), batch_size=4, shuffle=True, generator=generator, num_workers=2
    )
    vault = rngvault.Vault(store, run="t/stateful-loader")
    vault.track(loader, "loader")
    seen = []
    if mode == "full":
        for epoch in range(3):
            for index, batch in enumerate(loader):
                seen.append([epoch, index, batch.tolist()])
                if epoch == 1 and index == 7:
                    vault.snapshot("epoch1-batch7", epoch=1, step=7, durable=True)
    else:
        report = vault.restore("epoch1-batch7")
        assert "loader" in report.restored, report
        for epoch, first in ((1, 8), (2, 0)):
            for index, batch in enumerate(loader, first):
                seen.append([epoch, index, batch.tolist()])
    vault.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
"""


def run_script(script: Path, *args: str) -> list[Any]:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=python_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_resume_at_epoch_1_batch_7_with_2_workers_in_a_fresh_process(tmp_path):
    """A StatefulDataLoader (shuffled by its own generator, 2 workers) tracked by a Vault,
    snapshot at epoch 1 batch 7; a new process builds the loader, restores the snapshot,
    and the rest of epoch 1 and all of epoch 2 are the uninterrupted run's batches: the
    same items, loaded by the same workers with the same seeds."""
    script = tmp_path / "loader_run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    store = str(tmp_path / "store")
    full = run_script(script, "full", store)
    resumed = run_script(script, "resume", store)
    expected = [b for b in full if (b[0], b[1]) >= (1, 8)]
    assert len(expected) == 12 + 4  # 12 batches per epoch: 4 left of epoch 1, then 12
    assert resumed == expected
    epoch1 = [b for b in full if b[0] == 1]
    epoch2 = [b for b in full if b[0] == 2]
    assert [b[2] for b in epoch1] != [b[2] for b in epoch2]  # the epochs do differ


def test_a_state_at_every_limit_fits_one_state_of_a_snapshot():
    """MAX_ENTRIES entries, paths MAX_PATH deep of the longest int keys, and the rest of
    MAX_DATA_BYTES in one bytes value: valid, and its encoding within decode's
    MAX_STATE_BYTES, so decode accepts every state validate accepts."""
    counters = {"_num_yielded", "_sampler_iter_yielded"}
    top = [
        ((key,), *(("int", 0) if key in counters else ("none", None)))
        for key in list(sdl._ONE_PROCESS)[:-1]
    ]
    top.append((("_iterator_finished",), "bool", False))
    big = 2**64 - 1
    chain = [(tuple([big] * depth), "dict", None) for depth in range(1, sdl.MAX_PATH)]
    count = sdl.MAX_ENTRIES - 1 - len(top) - len(chain) - 1
    leaves = [((*chain[-1][0], big - i), "int", big) for i in range(count)]
    entries = [*top, *chain, *leaves]
    str_bytes = sum(len(path[0]) for path, _kind, _value in top)
    int_keys = sum(len(path) for path, _kind, _value in chain + leaves)
    rest = sdl.MAX_DATA_BYTES - str_bytes - int_keys * sdl.INT_KEY_BYTES - 1
    fields = {"entries": (((), "dict", None), (("b",), "bytes", bytes(rest)), *entries)}
    assert len(fields["entries"]) == sdl.MAX_ENTRIES
    FAMILY.validate(fields)
    data = rngvault.encode(rngvault.Snapshot({"g": rngvault.State(sdl.NAME, fields)}, created=0.0))
    assert len(data) > rngvault._format.MAX_STATE_BYTES * 3 // 4
    decoded = rngvault.decode(data)
    assert decoded.states["g"].fields == fields
