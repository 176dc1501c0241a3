"""``rngvault bisect``: its report, its JSON, and its exit status (0 agree, 1 diverge, 2
nothing compared)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rngvault
from tests.client.conftest import Run

PLANTED = 12


def loop(root: Path, run: str, steps: int, plant: int | None = None) -> None:
    """``steps`` steps drawing from ``augment``, a snapshot at each; one more draw at
    step ``plant``."""
    with rngvault.Vault(root, run=run, on_error="raise", track_globals=False) as vault:
        augment = vault.track(np.random.default_rng(3), "augment")
        for i in range(steps):
            augment.random()
            if i == plant:
                augment.random()
            vault.snapshot(f"step-{i}", step=i)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """alice/a and alice/same (the same loop), alice/b (one more draw at step 12), and
    alice/nosteps (a snapshot without a step)."""
    loop(tmp_path, "alice/a", 20)
    loop(tmp_path, "alice/same", 20)
    loop(tmp_path, "alice/b", 20, plant=PLANTED)
    with rngvault.Vault(tmp_path, run="alice/nosteps", track_globals=False) as vault:
        vault.snapshot("start")
    return str(tmp_path)


def test_diverging_runs_exit_1_with_the_step_generator_and_distance(rv: Run, store: str) -> None:
    """The report names the step, the last equal step and augment 1 raw output ahead."""
    status, out, err = rv("--url", store, "bisect", "alice/a", "alice/b")
    assert (status, err) == (1, "")
    assert f"diverge at step {PLANTED}" in out and f"last equal step: {PLANTED - 1}" in out
    [row] = [line.split() for line in out.splitlines() if line.startswith("augment")]
    assert row[:4] == ["augment", "numpy.bitgen", "advanced", "1"]


def test_json_output(rv: Run, store: str) -> None:
    """--json is the report's to_dict(), the same for --url after the command."""
    status, out, _ = rv("bisect", "alice/a", "alice/b", "--json", "--url", store)
    data = json.loads(out)
    assert status == 1 and data["diverged_at"] == PLANTED and data["agree"] is False
    assert data == rngvault.bisect(store, "alice/a", "alice/b").to_dict()
    assert [(g["name"], g["distance"]) for g in data["generators"]] == [("augment", 1)]


def test_agreeing_runs_exit_0(rv: Run, store: str) -> None:
    """Runs of the same loop: every shared step agrees, status 0."""
    status, out, _ = rv("--url", store, "bisect", "alice/a", "alice/same", "--generator", "augment")
    assert status == 0 and "agree on every shared step" in out and "20 shared step(s)" in out


def test_nothing_compared_exits_2_with_one_line(rv: Run, store: str) -> None:
    """An unknown run (with the close names), a generator no snapshot holds, a malformed
    run and runs that share no step: status 2, never a traceback."""
    status, _, err = rv("--url", store, "bisect", "alice/a", "alice/sam")
    assert status == 2 and err.startswith("rngvault: error: no run alice/sam")
    assert "did you mean alice/same" in err and len(err.splitlines()) == 1
    status, _, err = rv("--url", store, "bisect", "alice/a", "alice/b", "--generator", "loader")
    assert status == 2 and "'loader'" in err
    status, _, err = rv("--url", store, "bisect", "alice", "alice/b")
    assert status == 2 and "invalid run 'alice'" in err
    status, out, _ = rv("--url", store, "bisect", "alice/a", "alice/nosteps")
    assert status == 2 and "share no step" in out
    status, _, err = rv("--url", store, "bisect", "alice/a", "alice/b", "--rank", "-1")
    assert status == 2 and "--rank" in err
