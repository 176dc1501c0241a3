"""rngvault/families/dataloader.py mid-epoch: a snapshot taken inside an epoch records the
position, and after a restore the next iter() resumes at the next batch of that epoch."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import rngvault
from rngvault._errors import StateError
from rngvault.families import dataloader, families

torch = pytest.importorskip("torch")
from torch.utils.data import (  # noqa: E402  (after the importorskip above)
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    get_worker_info,
)

MidEpochWarning = dataloader.MidEpochWarning
HERE = Path(__file__).resolve().parent


class Items(Dataset):
    """Each item: its index, the seed of the worker that loads it (-1 in the main process),
    and a draw from the loading process's global torch generator; loads are counted."""

    def __init__(self, size: int = 30) -> None:
        self.size = size
        self.loads = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int, int, float]:
        self.loads += 1
        info = get_worker_info()
        draw = torch.rand(()).item() if info is None else 0.0
        return index, -1 if info is None else info.seed, draw


class Stream(IterableDataset):
    def __iter__(self):
        return iter(range(20))


class ShuffleOwn(Sampler):
    """A sampler of a kind rngvault does not know, with a torch.Generator of its own."""

    def __init__(self, size: int, generator: torch.Generator | None) -> None:
        self.size, self.generator = size, generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=self.generator).tolist())


def rows(batch) -> list:
    return [column.tolist() for column in batch]


def epochs(loader: DataLoader, count: int) -> list[list]:
    """``count`` epochs; after each batch one draw from the global torch generator (as a
    training step's dropout would), kept with the batch."""
    return [[[rows(batch), torch.rand(()).item()] for batch in loader] for _ in range(count)]


def stop_at(loader: DataLoader, epoch_batches: int) -> tuple[object, list]:
    """One whole epoch, then ``epoch_batches`` batches of the next (with the same draws as
    ``epochs``); returns the running iterator and what it gave."""
    epochs(loader, 1)
    running = iter(loader)
    got = [[rows(next(running)), torch.rand(()).item()] for _ in range(epoch_batches)]
    return running, got


def resume_epochs(loader: DataLoader, count: int) -> list[list]:
    return epochs(loader, count)


LOADERS = {
    "own generator": lambda workers: DataLoader(
        Items(), batch_size=4, shuffle=True, num_workers=workers,
        generator=torch.Generator().manual_seed(11),
    ),
    "global generator": lambda workers: DataLoader(
        Items(), batch_size=4, shuffle=True, num_workers=workers
    ),
    "sampler generator": lambda workers: DataLoader(
        Items(), batch_size=4, num_workers=workers,
        sampler=RandomSampler(Items(), generator=torch.Generator().manual_seed(5)),
        generator=torch.Generator().manual_seed(6),
    ),
    "sampler without generator": lambda workers: DataLoader(
        Items(), batch_size=4, num_workers=workers, sampler=RandomSampler(Items()),
        generator=torch.Generator().manual_seed(6),
    ),
    "with replacement": lambda workers: DataLoader(
        Items(), batch_size=4, num_workers=workers,
        sampler=RandomSampler(Items(), replacement=True, num_samples=70),
        generator=torch.Generator().manual_seed(2),
    ),
    "distributed": lambda workers: DataLoader(
        Items(), batch_size=2, num_workers=workers,
        sampler=DistributedSampler(Items(), num_replicas=2, rank=1, seed=3),
    ),
    "unknown sampler with a generator": lambda workers: DataLoader(
        Items(), batch_size=4, num_workers=workers,
        sampler=ShuffleOwn(30, torch.Generator().manual_seed(9)),
    ),
}  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", list(LOADERS))
def test_the_rest_of_the_epoch_and_the_next_are_the_uninterrupted_ones(kind, workers):
    """Snapshot at epoch 1 batch 3, restore into a fresh loader: the rest of epoch 1 and
    epoch 2 (order, worker seeds, the items' and the loop's global draws) are the
    uninterrupted run's."""
    make = LOADERS[kind]
    torch.manual_seed(0)
    expected = epochs(make(workers), 3)

    torch.manual_seed(0)
    loader = make(workers)
    rngvault.capture({"loader": loader})  # rngvault sees the loader before its epochs
    running, got = stop_at(loader, 3)
    assert got == expected[1][:3]
    snapshot = rngvault.decode(rngvault.encode(rngvault.capture({"loader": loader})))
    assert snapshot.states["loader"].fields["epoch"]["batches"] == 3
    del running

    torch.manual_seed(99)  # another process's state, which the restore replaces
    target = make(workers)
    report = rngvault.restore(snapshot, {"loader": target})
    assert report["loader"].verified
    assert "at batch 3 of an epoch: the next iter() resumes there" in report["loader"].detail
    assert resume_epochs(target, 2) == [expected[1][3:], expected[2]]


def test_skipped_batches_are_not_loaded():
    """The batches before the position come from the sampler alone: no __getitem__ call."""
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    running, _got = stop_at(loader, 5)
    snapshot = rngvault.capture({"loader": loader})
    del running
    target = LOADERS["own generator"](0)
    rngvault.restore(snapshot, {"loader": target})
    rest = list(target)
    assert len(rest) == len(target) - 5
    assert target.dataset.loads == 4 * len(rest) - 2  # 30 items: the last batch has 2


def test_a_resumed_epoch_captured_again_matches_the_uninterrupted_one():
    """Two batches after a resume at batch 3, the loader's state is the one the
    uninterrupted loader had at batch 5 (same epoch start, same count)."""
    torch.manual_seed(0)
    original = LOADERS["own generator"](0)
    rngvault.capture({"loader": original})
    running, _got = stop_at(original, 3)
    at_3 = rngvault.capture({"loader": original})
    next(running), next(running)
    at_5 = dataloader.capture(original)

    target = LOADERS["own generator"](0)
    rngvault.restore(at_3, {"loader": target})
    resumed = iter(target)
    next(resumed), next(resumed)
    assert dataloader.capture(target) == at_5


def test_position_zero_resumes_the_whole_epoch():
    """A snapshot right after iter(), before any batch, gives that epoch whole (not the next
    one, which a plain restore of the generator would give)."""
    torch.manual_seed(0)
    expected = epochs(LOADERS["own generator"](0), 2)
    torch.manual_seed(0)
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    running, _ = stop_at(loader, 0)
    snapshot = rngvault.capture({"loader": loader})
    assert snapshot.states["loader"].fields["epoch"]["batches"] == 0
    del running
    target = LOADERS["own generator"](0)
    rngvault.restore(snapshot, {"loader": target})
    assert resume_epochs(target, 1) == [expected[1]]


def test_between_epochs_the_state_has_no_position():
    """An exhausted iterator leaves no position: the state encodes as it always has."""
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    epochs(loader, 1)
    fields = dataloader.capture(loader)
    assert "epoch" not in fields
    assert set(fields) == {"generator", "sampler_generator", "sampler"}


def test_end_epoch_forgets_an_unfinished_epoch():
    """A loop that breaks out of an epoch, then end_epoch(): the next snapshot records no
    position, and a restore of it starts a new epoch as the uninterrupted loop does."""
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    running = iter(loader)
    next(running)
    assert "epoch" in dataloader.capture(loader)
    dataloader.end_epoch(loader)
    assert "epoch" not in dataloader.capture(loader)


def test_the_position_is_found_for_a_tracked_loader_iterated_before_any_snapshot(tmp_path):
    """Vault.track watches the loader, so an epoch begun before the first snapshot is known."""
    with rngvault.Vault(tmp_path, run="t/track") as vault:
        loader = vault.track(LOADERS["own generator"](0), "loader")
        running = iter(loader)
        next(running), next(running)
        taken = vault.snapshot("mid", durable=True)
    assert taken.states["loader"].fields["epoch"]["batches"] == 2


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: DataLoader(Stream(), batch_size=2), "IterableDataset"),
        (
            lambda: DataLoader(Items(), batch_size=2, sampler=ShuffleOwn(30, None)),
            "no torch.Generator of its own",
        ),
        (
            lambda: DataLoader(Items(), batch_size=2, num_workers=1, persistent_workers=True),
            "persistent workers",
        ),
    ],
)
def test_a_loader_that_cannot_resume_warns_once_and_says_why(make, why):
    """Mid-epoch, such a loader records why instead of a position and warns once; the
    restore report says so, and the next iter() after the restore starts a new epoch."""
    loader = make()
    rngvault.capture({"loader": loader})
    running = iter(loader)
    next(running)
    with pytest.warns(MidEpochWarning, match=why):
        first = rngvault.capture({"loader": loader})
    with warnings.catch_warnings():
        warnings.simplefilter("error", MidEpochWarning)
        rngvault.capture({"loader": loader})  # once per loader
    epoch = first.states["loader"].fields["epoch"]
    assert epoch["batches"] == 1 and why in epoch["unsupported"]
    del running
    target = make()
    report = rngvault.restore(rngvault.decode(rngvault.encode(first)), {"loader": target})
    assert "cannot be resumed" in report["loader"].detail
    assert report["loader"].verified
    assert len(list(target)) == len(target) if not isinstance(target.dataset, Stream) else True


def test_a_position_into_a_loader_that_cannot_resume_is_refused():
    """A resumable position restored into a loader over an IterableDataset: refused before
    anything is touched, naming the field."""
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    running = iter(loader)
    next(running)
    snapshot = rngvault.capture({"loader": loader}, include_globals=False)
    target = DataLoader(Stream(), batch_size=2, generator=torch.Generator())
    with pytest.raises(rngvault.RestoreError, match=r"epoch.*IterableDataset"):
        rngvault.restore(snapshot, {"loader": target}, include_globals=False)


def test_a_position_into_a_loader_drawing_from_another_generator_is_refused():
    """The snapshot's sampler shuffled with the loader's generator, the target's draws its
    seed from the global one: the replay could not be exact, so the restore is refused."""
    source = LOADERS["own generator"](0)
    rngvault.capture({"loader": source})
    running = iter(source)
    next(running)
    snapshot = rngvault.capture({"loader": source}, include_globals=False)
    target = LOADERS["sampler without generator"](0)
    with pytest.raises(rngvault.RestoreError, match=r"epoch\.global.*global torch generator"):
        rngvault.restore(snapshot, {"loader": target}, include_globals=False)


def mid_epoch_state() -> rngvault.State:
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    running = iter(loader)
    next(running)
    state = rngvault.capture({"loader": loader}, include_globals=False).states["loader"]
    del running
    return state


TORCH_STATE = mid_epoch_state().fields["generator"]


@pytest.mark.parametrize(
    ("path", "value", "needles"),
    [
        ("epoch.batches", -1, ["epoch.batches", "-1"]),
        ("epoch.batches", "7", ["epoch.batches"]),
        ("epoch.extra", 1, ["unknown field", "extra"]),
        ("epoch.unsupported", "", ["epoch.unsupported"]),
        ("epoch.unsupported", "x" * 300, ["epoch.unsupported"]),
        ("epoch.generator", None, ["epoch.generator"]),
        ("epoch.generator", b"\0" * 10, ["epoch.generator"]),
        ("epoch.sampler_generator", TORCH_STATE, ["epoch.sampler_generator"]),
        ("epoch", [1, 2], ["epoch", "expected a map"]),
    ],
)
def test_a_hostile_position_is_refused(path, value, needles, with_fields, assert_refused):
    """Decode and restore both refuse a bad ``epoch`` map, naming the field."""
    target = LOADERS["own generator"](0)
    assert_refused(with_fields(mid_epoch_state(), path, value), target, *needles)


def test_a_reason_with_generator_states_is_refused():
    """A position that cannot be resumed records no generator states."""
    fields = dict(mid_epoch_state().fields)
    fields["epoch"] = {**fields["epoch"], "unsupported": "why"}
    with pytest.raises(StateError, match="records no generator states"):
        families()["dataloader"].validate(fields)


def test_a_loader_without_generator_needs_the_global_start():
    loader = LOADERS["global generator"](0)
    rngvault.capture({"loader": loader})
    running = iter(loader)
    next(running)
    fields = dict(dataloader.capture(loader))
    del running
    assert fields["epoch"]["global"] is not None
    fields["epoch"] = {**fields["epoch"], "global": None}
    with pytest.raises(StateError, match="epoch.global"):
        families()["dataloader"].validate(fields)


def test_diff_says_how_far_the_epoch_went():
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    running = iter(loader)
    next(running)
    a = rngvault.capture({"loader": loader}, include_globals=False)
    next(running), next(running)
    b = rngvault.capture({"loader": loader}, include_globals=False)
    assert "epoch position: batch 1 -> batch 3" in rngvault.diff(a, b)["loader"].detail


def test_resume_in_a_fresh_process_with_two_workers(tmp_path):
    """The issue's case end to end: a Vault snapshot at epoch 1 batch 7 with 2 workers, a
    new process restores it: the rest of epoch 1 and all of epoch 2 (order, worker seeds,
    the loop's global draws) equal the uninterrupted run's."""
    job = HERE / "dataloader_resume_job.py"

    def run(mode: str, store: Path) -> dict:
        done = subprocess.run(
            [sys.executable, str(job), mode, str(store)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    full = run("full", tmp_path / "full")
    before = run("snap", tmp_path / "store")
    assert before["1"] == full["1"][:7]
    resumed = run("resume", tmp_path / "store")
    assert resumed["1"] == full["1"][7:]
    assert resumed["2"] == full["2"]
    seeds = {seed for batch in full["2"] for seed in batch[1]}
    assert len(seeds) == 2  # both workers loaded, each with its own seed


class OwnIteration(DataLoader):
    """A loader that iterates through another one (as accelerate's DataLoaderShard does)."""

    def __iter__(self):
        inner = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)
        yield from inner


def test_a_loader_that_iterates_its_own_way_warns_when_first_seen(tmp_path):
    """rngvault cannot see the epochs of such a loader: tracking it warns once, and a
    snapshot records no position (it says so instead of resuming wrongly)."""
    loader = OwnIteration(Items(), batch_size=4)
    with rngvault.Vault(tmp_path, run="t/wrapped") as vault:
        with pytest.warns(MidEpochWarning, match="iterates in its own way"):
            vault.track(loader, "loader")
        with warnings.catch_warnings():
            warnings.simplefilter("error", MidEpochWarning)
            vault.track(loader, "again")  # once per loader
        running = iter(loader)
        next(running)
        assert "epoch" not in dataloader.capture(loader)


def test_accelerates_prepared_loader_warns_when_tracked(tmp_path):
    """accelerate's DataLoaderShard (a DataLoader that iterates the loader it wraps, a batch
    ahead) is one of those loaders."""
    accelerate = pytest.importorskip("accelerate")
    prepared = accelerate.Accelerator(cpu=True).prepare(
        DataLoader(Items(), batch_size=3, shuffle=True, generator=torch.Generator())
    )
    with (
        rngvault.Vault(tmp_path, run="t/shard") as vault,
        pytest.warns(MidEpochWarning, match=type(prepared).__name__),
    ):
        vault.track(prepared, "loader")


def test_out_of_order_workers_cannot_resume():
    """in_order=False yields batches as workers finish them: not resumable, said so."""
    loader = DataLoader(Items(), batch_size=4, num_workers=2, in_order=False)
    rngvault.capture({"loader": loader})
    running = iter(loader)
    next(running)
    with pytest.warns(MidEpochWarning, match="in_order=False"):
        state = rngvault.capture({"loader": loader}).states["loader"]
    assert "in_order=False" in state.fields["epoch"]["unsupported"]
    del running


def test_a_position_past_the_target_loaders_end_is_refused():
    """Batch 7 restored into a loader with 2 batches an epoch: other data, refused."""
    loader = LOADERS["own generator"](0)
    rngvault.capture({"loader": loader})
    running, _ = stop_at(loader, 7)
    snapshot = rngvault.capture({"loader": loader}, include_globals=False)
    del running
    short = DataLoader(Items(8), batch_size=4, shuffle=True, generator=torch.Generator())
    with pytest.raises(rngvault.RestoreError, match=r"epoch\.batches.*2 batches an epoch"):
        rngvault.restore(snapshot, {"loader": short}, include_globals=False)
