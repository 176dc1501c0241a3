"""Vault.restore(step=N): the snapshot a run took at training step N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rngvault


@pytest.fixture
def vault(tmp_path: Path) -> rngvault.Vault:
    """A Vault of run alice/exp tracking only ``augment``, with snapshots at steps 0, 10
    and 20 (ten draws apart)."""
    v = rngvault.Vault(tmp_path, run="alice/exp", on_error="raise", track_globals=False)
    augment = v.track(np.random.default_rng(5), "augment")
    for step in (0, 10, 20):
        v.snapshot(f"s{step}", step=step)
        augment.random(10)
    return v


def test_restore_at_a_step_restores_that_snapshot(vault: rngvault.Vault) -> None:
    """step=10 puts augment where it was at step 10 (snapshots just taken are found
    without a flush); the name still works, positionally."""
    augment = vault.tracked["augment"]
    report = vault.restore(step=10)
    assert report.restored == ["augment"]
    at_10 = augment.random(3)
    vault.restore("s10")
    assert np.array_equal(augment.random(3), at_10)
    vault.restore(step=0)
    assert not np.array_equal(augment.random(3), at_10)


def test_restore_at_a_step_of_another_run(tmp_path: Path, vault: rngvault.Vault) -> None:
    """``run=`` looks the step up in that run."""
    vault.flush()
    other = rngvault.Vault(tmp_path, run="bob/repro", on_error="raise", track_globals=False)
    augment = other.track(np.random.default_rng(99), "augment")
    other.restore(step=20, run="alice/exp")
    vault.restore("s20")
    assert np.array_equal(augment.random(4), vault.tracked["augment"].random(4))


def test_name_and_step_together_or_neither_are_refused(vault: rngvault.Vault) -> None:
    """Both, or neither: a RestoreError saying what to pass."""
    with pytest.raises(rngvault.RestoreError, match="not both"):
        vault.restore("s10", step=10)
    with pytest.raises(rngvault.RestoreError, match="name or step=N"):
        vault.restore()
    with pytest.raises(rngvault.RestoreError, match="step must be an int"):
        vault.restore(step="10")  # type: ignore[arg-type]


def test_a_step_the_run_lacks_names_the_nearest_steps(vault: rngvault.Vault) -> None:
    """No snapshot at the step: NotFoundError naming it and the steps around it."""
    with pytest.raises(rngvault.NotFoundError, match=r"step 15 .*nearest steps are 10 and 20"):
        vault.restore(step=15)
    with pytest.raises(rngvault.NotFoundError, match=r"step 25 .*nearest steps are 20$"):
        vault.restore(step=25)
    with pytest.raises(rngvault.NotFoundError, match=r"step -3 .*nearest steps are 0$"):
        vault.restore(step=-3)


def test_several_snapshots_at_a_step(vault: rngvault.Vault) -> None:
    """Two snapshots at step 20 with equal states: either is restored; once a third with
    other states joins them, the error names all three and asks for a name."""
    augment = vault.tracked["augment"]
    vault.restore("s20")
    vault.snapshot("s20-copy", step=20)
    vault.restore(step=20)
    at_20 = augment.random(2)
    vault.restore(step=20)
    assert np.array_equal(augment.random(2), at_20)
    vault.snapshot("s20-moved", step=20)  # two draws later
    with pytest.raises(rngvault.RestoreError, match="s20, s20-copy, s20-moved"):
        vault.restore(step=20)
