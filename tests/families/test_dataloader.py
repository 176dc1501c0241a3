"""rngvault/families/dataloader.py: a DataLoader's generator, sampler generator and
DistributedSampler seed/epoch."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

import rngvault
from rngvault.families import dataloader

torch = pytest.importorskip("torch")
from torch.utils.data import (  # noqa: E402  (after the importorskip above)
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
)

LateRestoreWarning = dataloader.LateRestoreWarning


class Noisy(Dataset):
    """Each item is its index plus draws from torch, random and np.random in the process
    (or worker) that loads it, so worker seeding shows in the data."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> tuple[int, float, float, float]:
        return index, torch.rand(()).item(), random.random(), float(np.random.rand())


def epoch(loader: DataLoader) -> list:
    """One epoch as plain lists: the order and each item's draws."""
    return [[column.tolist() for column in batch] for batch in loader]


def make_loader(seed: int, num_workers: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        Noisy(), batch_size=4, shuffle=True, generator=generator, num_workers=num_workers
    )


def capture_loader(loader: DataLoader) -> rngvault.Snapshot:
    """The loader with the globals, which Noisy items draw from when there are no workers."""
    return rngvault.capture({"loader": loader})


def restore_loader(snapshot: rngvault.Snapshot, loader: DataLoader) -> rngvault.RestoreReport:
    return rngvault.restore(snapshot, {"loader": loader})


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restore_before_iter_reproduces_the_epoch(num_workers):
    """Restoring the loader's generator before iter() gives the same order and the same
    worker draws, in the same loader and in a fresh differently seeded one."""
    loader = make_loader(1, num_workers)
    epoch(loader)
    snapshot = capture_loader(loader)
    expected = epoch(loader)
    assert epoch(loader) != expected
    restore_loader(snapshot, loader)
    assert epoch(loader) == expected
    fresh = make_loader(2, num_workers)
    report = restore_loader(snapshot, fresh)
    assert report["loader"].status == "restored"
    assert epoch(fresh) == expected


def test_loader_on_the_global_generator_is_restored_with_the_globals():
    """A loader without a generator draws from torch's global one: its state holds no
    generator, and restoring the globals reproduces the epoch."""
    loader = DataLoader(Noisy(), batch_size=4, shuffle=True)
    snapshot = rngvault.capture({"loader": loader})
    assert snapshot.states["loader"].fields["generator"] is None
    expected = epoch(loader)
    rngvault.restore(snapshot, {"loader": loader})
    assert epoch(loader) == expected


def test_sampler_generator_of_its_own_is_captured_and_restored():
    """A RandomSampler with its own generator (not the loader's) is captured separately."""
    sampler = RandomSampler(range(24), generator=torch.Generator().manual_seed(3))
    loader = DataLoader(
        range(24), batch_size=4, sampler=sampler, generator=torch.Generator().manual_seed(4)
    )
    snapshot = capture_loader(loader)
    assert snapshot.states["loader"].fields["sampler_generator"] is not None
    expected = epoch(loader)
    restore_loader(snapshot, loader)
    assert epoch(loader) == expected


def distributed_loader(seed: int, epoch_number: int) -> DataLoader:
    """A rank-0-of-2 loader; no process group is needed when both are given."""
    sampler = DistributedSampler(range(40), num_replicas=2, rank=0, shuffle=True, seed=seed)
    sampler.set_epoch(epoch_number)
    return DataLoader(range(40), batch_size=4, sampler=sampler)


def test_distributed_sampler_seed_and_epoch_are_restored():
    """A DistributedSampler's seed and epoch are recorded and set back, so its shard order
    is the captured one."""
    loader = distributed_loader(seed=5, epoch_number=3)
    snapshot = capture_loader(loader)
    assert snapshot.states["loader"].fields["sampler"] == {"seed": 5, "epoch": 3}
    expected = epoch(loader)
    target = distributed_loader(seed=9, epoch_number=7)
    assert epoch(target) != expected
    restore_loader(snapshot, target)
    assert (target.sampler.seed, target.sampler.epoch) == (5, 3)
    assert epoch(target) == expected


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restore_while_an_iterator_runs_warns(num_workers):
    """Restoring while an iterator of the loader is running warns that this epoch's order is
    fixed; the next iter() follows the restored state."""
    loader = make_loader(6, num_workers)
    snapshot = capture_loader(loader)
    expected = epoch(loader)
    running = iter(loader)
    next(running)
    with pytest.warns(LateRestoreWarning, match="order is already fixed"):
        restore_loader(snapshot, loader)
    del running
    assert epoch(loader) == expected


def test_restore_after_an_epoch_ended_does_not_warn():
    """An exhausted iterator is not running: restoring then gives no warning."""
    loader = make_loader(7)
    snapshot = capture_loader(loader)
    finished = iter(loader)
    list(finished)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LateRestoreWarning)
        report = restore_loader(snapshot, loader)
    assert "loader" in report.restored


def test_loader_repeats_epochs_in_a_new_process(restore_elsewhere):
    """Encode, decode in a new interpreter, restore into fresh loaders: the same epochs."""
    plain = DataLoader(
        range(30), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(8)
    )
    distributed = distributed_loader(seed=10, epoch_number=2)
    snapshot = rngvault.capture({"plain": plain, "dist": distributed}, include_globals=False)
    expected = {
        "plain": [batch.tolist() for batch in plain],
        "dist": [batch.tolist() for batch in distributed],
    }
    setup = """
        from torch.utils.data import DataLoader, DistributedSampler
        plain = DataLoader(range(30), batch_size=4, shuffle=True,
                           generator=torch.Generator().manual_seed(999))
        sampler = DistributedSampler(range(40), num_replicas=2, rank=0, shuffle=True, seed=0)
        dist = DataLoader(range(40), batch_size=4, sampler=sampler)
        targets = {"plain": plain, "dist": dist}
    """
    draws = {name: f"[batch.tolist() for batch in {name}]" for name in expected}
    elsewhere = restore_elsewhere(snapshot, setup, draws, imports="import torch")
    assert sorted(elsewhere["restored"]) == ["dist", "plain"]
    assert elsewhere["results"] == expected


def test_describe_shows_generator_and_sampler():
    """describe() gives the generator's position and the DistributedSampler's seed and epoch."""
    loader = distributed_loader(seed=5, epoch_number=3)
    text = capture_loader(loader).states["loader"].describe()
    assert text == "global torch generator; DistributedSampler seed 5 epoch 3"
    text = capture_loader(make_loader(11)).states["loader"].describe()
    assert text == "generator MT index 624/624, seed 11"


# -- targets that do not match, and invalid fields ---------------------------------------


def test_loader_state_into_a_loader_without_generator_is_refused():
    """The snapshot's loader had its own generator, the target uses the global one."""
    snapshot = capture_loader(make_loader(1))
    target = DataLoader(Noisy(), batch_size=4, shuffle=True)
    with pytest.raises(rngvault.RestoreError, match=r"'loader'.*'generator'.*its own generator"):
        restore_loader(snapshot, target)


def test_loader_state_into_a_distributed_loader_is_refused():
    """The snapshot's loader had no DistributedSampler, the target has one."""
    snapshot = capture_loader(DataLoader(range(40), batch_size=4))
    with pytest.raises(rngvault.RestoreError, match=r"'loader'.*'sampler'.*DistributedSampler"):
        restore_loader(snapshot, distributed_loader(seed=1, epoch_number=0))


def test_loader_state_into_a_sampler_without_generator_is_refused():
    """The snapshot's sampler had a generator of its own, the target's does not."""
    sampler = RandomSampler(range(24), generator=torch.Generator().manual_seed(3))
    snapshot = capture_loader(DataLoader(range(24), sampler=sampler))
    target = DataLoader(range(24), sampler=RandomSampler(range(24)))
    with pytest.raises(rngvault.RestoreError, match=r"'loader'.*'sampler_generator'"):
        restore_loader(snapshot, target)


def test_loader_state_into_a_random_is_refused():
    """Family tag vs target: a DataLoader state cannot go into a random.Random."""
    snapshot = rngvault.Snapshot({"gen": capture_loader(make_loader(1)).states["loader"]})
    with pytest.raises(rngvault.RestoreError, match=r"'gen'.*DataLoader.*Random"):
        rngvault.restore(snapshot, {"gen": random.Random(0)}, include_globals=False)


def unseeded(state: bytes) -> bytes:
    return state[:12] + bytes(4) + state[16:]


RULES = [
    ("sampler.seed", 1.5, ["'sampler.seed'", "float 1.5"]),
    ("sampler.epoch", "3", ["'sampler.epoch'", "'3'"]),
    ("sampler.extra", 1, ["'sampler.extra'", "unknown field", "'extra'"]),
    ("extra", 1, ["unknown field", "'extra'"]),
]


@pytest.mark.parametrize(("path", "value", "needles"), RULES, ids=[r[0] for r in RULES])
def test_invalid_sampler_field_is_refused(with_fields, assert_refused, path, value, needles):
    """The sampler's seed and epoch are integers and no unknown field passes."""
    state = capture_loader(distributed_loader(seed=5, epoch_number=3)).states["loader"]
    assert_refused(
        with_fields(state, path, value), distributed_loader(seed=1, epoch_number=1), *needles
    )


def test_invalid_generator_state_is_refused(with_fields, assert_refused):
    """The loader's generator state is checked like any CPU generator state (seeded flag)."""
    state = capture_loader(make_loader(1)).states["loader"]
    bad = with_fields(state, "generator", unseeded(state.fields["generator"]))
    assert_refused(bad, make_loader(2), "'generator.seeded'", "seeded flag is 0")


def test_generator_state_of_the_wrong_size_is_refused(with_fields, assert_refused):
    """Size: the loader's generator state is 5056 bytes."""
    state = capture_loader(make_loader(1)).states["loader"]
    bad = with_fields(state, "generator", state.fields["generator"][:100])
    assert_refused(bad, make_loader(2), "'generator'", "expected 5056 bytes, got 100")


def test_a_sampler_whose_seed_and_epoch_no_shuffle_can_take_is_refused():
    """DistributedSampler shuffles with manual_seed(seed + epoch): a state past that range
    could never iterate, so it is refused naming the epoch."""
    for seed, epoch in [(2**64 - 1, 1), (-(2**63), -1)]:
        state = rngvault.State(
            "dataloader",
            {
                "generator": None,
                "sampler_generator": None,
                "sampler": {"seed": seed, "epoch": epoch},
            },
        )
        with pytest.raises(rngvault.StateError) as info:
            dataloader.validate(state.fields)
        assert info.value.field == "sampler.epoch"
