"""End to end on CPU: a run resumed from a snapshot in a fresh process gives bit-identical
losses (dropout, a shuffling DataLoader with 2 workers, NumPy augmentation in workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="torch is not installed")

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "tests" / "e2e" / "train.py"


def train(store: str, mode: str, out: Path, checkpoints: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="0")
    done = subprocess.run(
        [sys.executable, str(TRAIN), store, mode, str(out), str(checkpoints)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def check_resume_matches(store: str, tmp_path: Path) -> None:
    """Train 4 epochs; resume from epoch 2 elsewhere; epochs 2 and 3 must match exactly."""
    original = train(store, "train", tmp_path / "train.json", tmp_path)
    resumed = train(store, "resume", tmp_path / "resume.json", tmp_path)
    assert set(resumed["losses"]) == {"2", "3"}
    for epoch in ("2", "3"):
        assert len(original["losses"][epoch]) == 6
        assert resumed["losses"][epoch] == original["losses"][epoch], f"epoch {epoch} differs"
    # The losses really depend on the generators: the epochs differ from each other.
    assert original["losses"]["2"] != original["losses"]["3"]
    assert resumed["divergence"] is None


def test_resumed_training_is_bit_identical_with_the_local_store(tmp_path: Path) -> None:
    """Through the embedded local store."""
    check_resume_matches(str(tmp_path / "store"), tmp_path)
