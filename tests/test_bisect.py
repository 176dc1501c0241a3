"""rngvault.bisect: the first step at which two runs' generators differ, by how many draws.

Two 10,000-step runs of the same loop are built once for the module through a Vault (a
snapshot at every step); the second draws once more from ``augment`` at step 6,123. Small
runs cover the rest: steps only one run has, one generator, a reseeded generator, several
snapshots at one step, unknown names.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from tests.conftest import ROOT, python_env

torch = pytest.importorskip("torch", reason="torch is not installed")

STEPS = 10_000
PLANTED = 6_123
RESTORED = 5_000
AFTER = 5  # steps replayed after the restored one


def step_draws(augment: np.random.Generator) -> list[float]:
    """One training step's draws: one from each global generator and one from ``augment``."""
    return [random.random(), float(np.random.random()), torch.rand(1).item(), augment.random()]


def train(
    root: Path,
    run: str,
    steps: int,
    *,
    plant: dict[int, str] | None = None,
    every: int = 1,
    record: range = range(0),
) -> list[list[float]]:
    """Run the loop, a snapshot ``step-{i}`` after step i's draws (every ``every`` steps);
    ``plant`` maps a step to the generator that draws once more there (``augment`` or
    ``python``, or ``reseed`` to replace ``augment``'s state). Returns the draws of the
    steps in ``record``."""
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    plant = plant or {}
    recorded = []
    with rngvault.Vault(root, run=run, on_error="raise") as vault:
        augment = vault.track(np.random.default_rng(11), "augment")
        for i in range(steps):
            draws = step_draws(augment)
            if i in record:
                recorded.append(draws)
            if plant.get(i) == "augment":
                augment.random()
            elif plant.get(i) == "python":
                random.random()
            elif plant.get(i) == "reseed":
                augment.bit_generator.state = np.random.default_rng(12).bit_generator.state
            if i % every == 0:
                vault.snapshot(f"step-{i}", step=i)
    return recorded


def scratch() -> Path:
    """A new temporary directory, in memory-backed /dev/shm where there is one."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="rngvault-bisect-", dir=base))


@pytest.fixture(scope="module")
def long_runs() -> Iterator[tuple[Path, list[list[float]]]]:
    """A store holding alice/a and alice/same (the same loop) and alice/b (one extra
    ``augment`` draw at step 6,123), 10,000 snapshots each; and the draws alice/a made
    after step 5,000. Kept in memory-backed /dev/shm where there is one: the test is
    about bisect, and a disk's fsyncs would take most of its time."""
    root = scratch()
    try:
        after = train(root, "alice/a", STEPS, record=range(RESTORED + 1, RESTORED + 1 + AFTER))
        train(root, "alice/same", STEPS)
        train(root, "alice/b", STEPS, plant={PLANTED: "augment"})
        yield root, after
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_bisect_names_the_planted_step_generator_and_distance(long_runs: Any) -> None:
    """One extra augment.random() at step 6,123 of run B: bisect names step 6,123, the
    generator augment alone, 1 raw output ahead, and step 6,122 as the last equal one."""
    root, _ = long_runs
    report = rngvault.bisect(root, "alice/a", "alice/b")
    assert not report.agree
    assert report.diverged_at == PLANTED and report.last_equal == PLANTED - 1
    assert report.names == (f"step-{PLANTED}", f"step-{PLANTED}")
    [augment] = report.generators
    assert (augment.name, augment.status, augment.distance) == ("augment", "advanced", 1)
    assert augment.unit == "raw 64-bit outputs"
    assert (report.compared, report.only_a, report.only_b) == (PLANTED + 1, 0, 0)
    text = str(report)
    assert f"diverge at step {PLANTED}" in text and f"last equal step: {PLANTED - 1}" in text
    assert "augment" in text and "raw 64-bit outputs" in text
    assert json.loads(json.dumps(report.to_dict()))["generators"][0]["distance"] == 1


def test_bisect_of_two_identical_runs_says_they_agree(long_runs: Any) -> None:
    """With nothing planted, every one of the 10,000 shared steps is compared and equal."""
    root, _ = long_runs
    report = rngvault.bisect(rngvault.LocalStore(root), "alice/a", "alice/same")
    assert report.agree and report.diverged_at is None and report.generators == ()
    assert (report.compared, report.last_equal, report.only_a, report.only_b) == (
        STEPS,
        STEPS - 1,
        0,
        0,
    )
    assert "agree on every shared step" in str(report)


def test_bisect_of_one_generator_compares_only_its_states(long_runs: Any) -> None:
    """``generator="python.global"`` finds no difference in run B; ``"augment"`` finds
    the planted step."""
    root, _ = long_runs
    assert rngvault.bisect(root, "alice/a", "alice/b", generator="python.global").agree
    report = rngvault.bisect(root, "alice/a", "alice/b", generator="augment")
    assert report.diverged_at == PLANTED and [g.name for g in report.generators] == ["augment"]


def test_restore_at_a_step_in_a_fresh_process_continues_bit_identically(long_runs: Any) -> None:
    """A new interpreter restores alice/a with ``vault.restore(step=5000)`` and draws the
    next steps: every generator gives exactly what the uninterrupted run drew."""
    root, after = long_runs
    script = f"""
import json, sys
import numpy as np
import torch
import rngvault
from tests.test_bisect import step_draws
vault = rngvault.Vault(sys.argv[1], run="alice/a", on_error="raise")
augment = vault.track(np.random.default_rng(999), "augment")
report = vault.restore(step={RESTORED})
assert not report.failed, report
assert {{"augment", "python.global", "torch.cpu"}} <= set(report.restored), report
print(json.dumps([step_draws(augment) for _ in range({AFTER})]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=python_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == after


# -- small runs ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> rngvault.LocalStore:
    return rngvault.LocalStore(tmp_path)


def test_runs_with_different_steps_are_compared_on_the_steps_they_share(
    store: rngvault.LocalStore,
) -> None:
    """Run A snapshots every step, run B every third one and draws once more at step 100:
    the first shared step after it (102) is named, with 99 as the last equal step; steps
    only A has are counted, not compared."""
    train(store.root, "alice/a", 150)
    train(store.root, "alice/b", 150, plant={100: "augment"}, every=3)
    report = rngvault.bisect(store, "alice/a", "alice/b")
    assert report.diverged_at == 102 and report.last_equal == 99
    assert report.compared == len(range(0, 103, 3))
    assert (report.only_a, report.only_b) == (103 - report.compared, 0)
    [augment] = report.generators
    assert (augment.name, augment.distance) == ("augment", 1)


def test_each_generator_is_bisected_on_its_own(store: rngvault.LocalStore) -> None:
    """Run B draws once more from augment at step 30 and from python at step 60: bisect
    of every generator stops at 30; of python.global, at 60, 2 32-bit MT outputs ahead
    (random() takes two 32-bit words)."""
    train(store.root, "alice/a", 80)
    train(store.root, "alice/b", 80, plant={30: "augment", 60: "python"})
    assert rngvault.bisect(store, "alice/a", "alice/b").diverged_at == 30
    report = rngvault.bisect(store, "alice/a", "alice/b", generator="python.global")
    assert report.diverged_at == 60 and report.last_equal == 59
    [python] = report.generators
    assert (python.name, python.distance, python.unit) == ("python.global", 2, "32-bit MT outputs")


def test_a_reseeded_generator_is_unreachable(store: rngvault.LocalStore) -> None:
    """Run B replaces augment's state with another seed's at step 10: no draw distance,
    shown as unreachable."""
    train(store.root, "alice/a", 20)
    train(store.root, "alice/b", 20, plant={10: "reseed"})
    report = rngvault.bisect(store, "alice/a", "alice/b")
    [augment] = report.generators
    assert report.diverged_at == 10 and augment.status == "reseeded" and augment.distance is None
    assert "unreachable" in str(report)
    assert report.to_dict()["generators"][0]["distance"] is None


def test_the_first_snapshot_stored_at_a_step_is_the_one_compared(
    store: rngvault.LocalStore,
) -> None:
    """Run B stores two snapshots at step 5, the second after an extra draw: the first
    is compared, so the runs agree."""
    train(store.root, "alice/a", 10)
    train(store.root, "alice/b", 10)
    with rngvault.Vault(store, run="alice/b", on_error="raise") as vault:
        random.random()
        vault.snapshot("step-5-again", step=5, durable=True)
    assert [e.name for e in store.steps("alice/b", start=5)][:2] == ["step-5", "step-5-again"]
    report = rngvault.bisect(store, "alice/a", "alice/b")
    assert report.agree and report.compared == 10


def test_unknown_runs_and_generators_are_named(store: rngvault.LocalStore) -> None:
    """An unknown run is a NotFoundError naming it; so is a generator no snapshot holds;
    runs sharing no step say so."""
    train(store.root, "alice/a", 3)
    with pytest.raises(rngvault.NotFoundError, match="alice/nope"):
        rngvault.bisect(store, "alice/a", "alice/nope")
    with pytest.raises(rngvault.NotFoundError, match="alice/nope"):
        rngvault.bisect(store, "alice/nope", "alice/a")
    with pytest.raises(rngvault.NotFoundError, match="'loader'"):
        rngvault.bisect(store, "alice/a", "alice/a", generator="loader")
    with pytest.raises(rngvault.InvalidNameError, match="no-slash"):
        rngvault.bisect(store, "alice/a", "no-slash")
    with rngvault.Vault(store, run="alice/empty", on_error="raise") as vault:
        vault.snapshot("no-step", durable=True)
    report = rngvault.bisect(store, "alice/a", "alice/empty")
    assert report.agree and report.compared == 0 and report.only_a == 3
    assert "share no step" in str(report)
