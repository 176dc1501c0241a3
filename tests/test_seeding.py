"""Tests for rngvault/_seeding.py: one seed for every global generator, worker streams, flags."""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault import StateError, _seeding
from rngvault._seeding import (
    CUBLAS_WORKSPACE_CONFIG,
    ReproducibilityWarning,
    per_worker,
    seed_everything,
    seed_worker,
    worker_seed_sequence,
)

torch = pytest.importorskip("torch", reason="torch is not installed")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep the process's torch flags, environment and global generators as they were."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[0], saved[1]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
    random.setstate(saved[4])
    np.random.set_state(saved[5])
    torch.set_rng_state(saved[6])


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.random()), float(torch.rand(1))


def test_seed_everything_makes_draws_reproducible() -> None:
    """The same seed gives the same python, numpy and torch draws; another seed, others."""
    assert seed_everything(3407) == ("python.global", "numpy.global", "torch.cpu")
    first = draws()
    seed_everything(3407)
    assert draws() == first
    seed_everything(42)
    assert all(x != y for x, y in zip(draws(), first, strict=True))


def test_seed_everything_matches_each_librarys_own_seeding() -> None:
    """seed_everything(s) leaves each generator as random.seed, np.random.seed and
    torch.manual_seed with s would."""
    seed_everything(99)
    got = draws()
    assert got == (
        random.Random(99).random(),
        float(np.random.RandomState(99).random_sample()),
        float(torch.rand(1, generator=torch.Generator().manual_seed(99))),
    )


def test_deterministic_true_sets_the_torch_flags() -> None:
    """deterministic=True sets cudnn.benchmark False, cudnn.deterministic True, deterministic
    algorithms on (raising), and CUBLAS_WORKSPACE_CONFIG when it was unset."""
    torch.backends.cudnn.benchmark = True
    seed_everything(1, deterministic=True)
    assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.deterministic is True
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG == ":4096:8"


def test_deterministic_warn_turns_on_warn_only() -> None:
    """deterministic="warn" enables deterministic algorithms with warn_only=True."""
    seed_everything(1, deterministic="warn")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_deterministic_false_leaves_the_flags_alone() -> None:
    """deterministic=False (the default) changes no torch setting and no environment."""
    torch.backends.cudnn.benchmark = True
    seed_everything(1)
    import os

    assert torch.backends.cudnn.benchmark is True
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_cublas_workspace_config_is_not_overwritten(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUBLAS_WORKSPACE_CONFIG the user set stays as it is."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(1, deterministic=True)
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_cublas_set_after_cuda_init_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting CUBLAS_WORKSPACE_CONFIG once CUDA is initialized warns that it may not apply."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.warns(ReproducibilityWarning, match="after CUDA was initialized"):
        seed_everything(1, deterministic=True)


def test_unset_pythonhashseed_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PYTHONHASHSEED (or with "random") seed_everything warns; with one it does not."""
    monkeypatch.delenv("PYTHONHASHSEED")
    monkeypatch.setattr(_seeding, "_warned_hashseed", False)  # a process that has not warned
    with pytest.warns(ReproducibilityWarning, match="PYTHONHASHSEED"):
        seed_everything(1)
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    monkeypatch.setattr(_seeding, "_warned_hashseed", False)
    with pytest.warns(ReproducibilityWarning, match="PYTHONHASHSEED"):
        seed_everything(1)
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReproducibilityWarning)
        seed_everything(1)


def test_the_pythonhashseed_warning_is_given_once_per_process_at_the_callers_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PYTHONHASHSEED warning is about the process: the first seed_everything gives it,
    pointing at the caller's line (this file); later calls do not repeat it."""
    monkeypatch.delenv("PYTHONHASHSEED")
    monkeypatch.setattr(_seeding, "_warned_hashseed", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            seed_everything(seed)
    hashseed = [w for w in caught if "PYTHONHASHSEED" in str(w.message)]
    assert len(hashseed) == 1
    assert hashseed[0].filename == __file__
    assert issubclass(hashseed[0].category, rngvault.RngVaultWarning)


def test_the_cublas_warning_points_at_the_callers_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning about CUBLAS_WORKSPACE_CONFIG set too late names the seed_everything line."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seed_everything(1, deterministic=True)
    assert [w.filename for w in caught if "after CUDA" in str(w.message)] == [__file__]


def test_without_torch_only_python_and_numpy_are_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With torch not importable, seed_everything seeds python and numpy, never imports
    torch, and warns only when determinism was asked for."""
    state = torch.get_rng_state()
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torch", None)  # makes torch unimportable
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReproducibilityWarning)
            assert seed_everything(5) == ("python.global", "numpy.global")
        assert random.random() == random.Random(5).random()
        with pytest.warns(ReproducibilityWarning, match="torch is not installed"):
            seed_everything(5, deterministic=True)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "7", None])
def test_bad_seed_is_refused(seed: Any) -> None:
    """Seeds outside NumPy's 0..2**32-1 (or not ints) are refused, the value shown."""
    with pytest.raises(StateError, match="seed") as error:
        seed_everything(seed)
    assert error.value.field == "seed"


def test_bad_deterministic_is_refused() -> None:
    """deterministic takes False, True or "warn" only."""
    with pytest.raises(StateError, match="deterministic"):
        seed_everything(1, deterministic="yes")  # type: ignore[arg-type]


# -- DataLoader workers ----------------------------------------------------------------------


class WorkerDraws(torch.utils.data.Dataset[tuple[int, int, float, float, float]]):
    """Each item: the worker id and torch seed, then a python, numpy legacy and Generator draw."""

    def __init__(self, rng: np.random.Generator, register_in_worker: bool = False) -> None:
        self.rng = rng
        self.register_in_worker = register_in_worker

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[int, int, float, float, float]:
        info = torch.utils.data.get_worker_info()
        assert info is not None
        if self.register_in_worker:
            per_worker(self.rng)
        return (
            info.id,
            torch.initial_seed(),
            random.random(),
            float(np.random.random()),
            float(self.rng.random()),
        )


def load(dataset: WorkerDraws, seed: int) -> list[tuple[int, int, float, float, float]]:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=2,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        multiprocessing_context="fork",
    )
    return [(int(w), int(s), float(p), float(n), float(g)) for w, s, p, n, g in loader]


def first_per_worker(
    items: list[tuple[int, int, float, float, float]],
) -> dict[int, tuple[int, int, float, float, float]]:
    found: dict[int, tuple[int, int, float, float, float]] = {}
    for item in items:
        found.setdefault(item[0], item)
    return found


def expected_first(worker_seed: int, rng_seed: int) -> tuple[float, float, float]:
    """What a worker's first python, numpy legacy and per_worker Generator draws must be."""
    seq = worker_seed_sequence(np.random.SeedSequence(rng_seed), worker_seed)
    return (
        random.Random(worker_seed % 2**32).random(),
        float(np.random.RandomState(worker_seed % 2**32).random_sample()),
        float(np.random.Generator(np.random.PCG64(seq)).random()),
    )


@pytest.mark.parametrize("register_in_worker", [False, True], ids=["in-parent", "in-worker"])
def test_seed_worker_gives_distinct_reproducible_worker_streams(register_in_worker: bool) -> None:
    """With 2 workers, seed_worker seeds python and numpy from torch's worker seed and gives a
    per_worker Generator a stream per worker: distinct across workers, the same on a second
    run with the same loader seed, whether registered in the parent or in the worker."""
    rng = np.random.default_rng(21)
    if not register_in_worker:
        per_worker(rng)
    parent_state = rng.bit_generator.state
    dataset = WorkerDraws(rng, register_in_worker=register_in_worker)
    first_run = load(dataset, seed=5)
    assert load(dataset, seed=5) == first_run
    workers = first_per_worker(first_run)
    assert sorted(workers) == [0, 1]
    for worker_id, worker_seed, py, legacy, gen in workers.values():
        assert (py, legacy, gen) == expected_first(worker_seed, rng_seed=21), worker_id
    zero, one = workers[0][2:], workers[1][2:]
    assert all(x != y for x, y in zip(zero, one, strict=True))
    assert load(dataset, seed=6) != first_run
    assert rng.bit_generator.state == parent_state  # the parent's generator is untouched


def test_per_worker_outside_a_worker_changes_nothing() -> None:
    """Registering in the main process, and seed_worker there, leave the Generator alone."""
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    assert per_worker(rng) is rng
    seed_worker(0)
    assert rng.bit_generator.state == state


def test_seed_worker_outside_a_worker_seeds_from_torchs_seed() -> None:
    """seed_worker seeds python and numpy with torch.initial_seed() % 2**32 and returns it."""
    torch.manual_seed(2**40 + 17)
    assert seed_worker(0) == 17
    assert random.random() == random.Random(17).random()
    assert np.random.random() == np.random.RandomState(17).random_sample()


def test_per_worker_refuses_what_it_cannot_reseed() -> None:
    """per_worker takes Generators and BitGenerators with a SeedSequence, else says why."""
    with pytest.raises(StateError, match="takes a numpy Generator"):
        per_worker(random.Random(1))
    legacy_bit_generator = np.random.RandomState(1)._bit_generator  # seeded without SeedSequence
    with pytest.raises(StateError, match="no SeedSequence"):
        per_worker(legacy_bit_generator)


@pytest.mark.cuda
def test_seed_everything_seeds_every_cuda_device() -> None:
    """seed_everything lists torch.cuda and makes CUDA draws reproducible on each device."""
    saved = torch.cuda.get_rng_state_all()
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    try:
        assert "torch.cuda" in seed_everything(11)
        first = [torch.rand(4, device=device).tolist() for device in devices]
        seed_everything(11)
        assert [torch.rand(4, device=device).tolist() for device in devices] == first
    finally:
        torch.cuda.set_rng_state_all(saved)


@pytest.mark.cuda
def test_cublas_set_after_real_cuda_init_warns() -> None:
    """Once CUDA is initialized, setting CUBLAS_WORKSPACE_CONFIG warns that it may not apply."""
    torch.cuda.init()
    with pytest.warns(ReproducibilityWarning, match="after CUDA was initialized"):
        seed_everything(1, deterministic=True)
