"""RngVaultTrainerCallback with the real Hugging Face Trainer on CPU (a one-layer BERT built
from a config, no downloads): snapshot names and metadata, the reference file in each
checkpoint, and resumes in fresh processes whose losses are bit-identical to an uninterrupted
run's, even when the Trainer's own ``rng_state.pth`` says otherwise.

The fresh-process runs (tests/integrations/transformers_job.py, in parallel where they can):
an uninterrupted 3-epoch run, and two resumes of a checkpoint taken at the end of epoch 1 by
a run that stopped there (with the callback; with the callback and a ``rng_state.pth`` from
another seed). The stopped run, and a resume without the callback, run in this process.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import TrainerControl, TrainerState, TrainingArguments

import rngvault
from rngvault.integrations.transformers import (
    RngVaultTrainerCallback,
    read_ref_file,
    ref_file_name,
)
from tests.conftest import python_env
from tests.integrations import transformers_job as job

JOB = Path(job.__file__)
TIMEOUT = 150


def _start(out: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, str(JOB), str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=python_env(PYTHONHASHSEED="0"),
    )
    return process, out


def _finish(*started: tuple[subprocess.Popen[str], Path]) -> list[dict[str, Any]]:
    results = []
    for process, out in started:
        try:
            output, _ = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        assert process.returncode == 0, output[-3000:]
        results.append(json.loads(out.read_text()))
    return results


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Training here and in the job's processes uses one torch thread: the same arithmetic
    everywhere, and far faster than threads competing for a busy machine's cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted 3-epoch run (a fresh process) and, meanwhile, here, a run stopped
    after epoch 1's checkpoint; then two fresh processes resume that checkpoint with the
    callback (one with rng_state.pth from another seed) while, here, the Trainer resumes it
    without rngvault."""
    work = tmp_path_factory.mktemp("transformers")
    store = str(work / "store")
    full = _start(work / "full.json", "--output-dir", str(work / "full"), "--store",
                  str(work / "store-full"), "--run", "t/full")  # fmt: skip
    with rngvault.Vault(store, run="t/stop") as vault:
        augment = vault.track(np.random.default_rng(7), "augment")
        callbacks = [RngVaultTrainerCallback(vault), job.StopAfter(epochs=1)]
        stop = job.build_trainer(str(work / "stop"), callbacks, augment)
        stop.train()
    checkpoint = work / "stop" / f"checkpoint-{job.STEPS_PER_EPOCH}"
    for name in ("resumed", "untracked"):  # resume_from_checkpoint=True finds it there
        shutil.copytree(checkpoint, work / name / checkpoint.name)
    elsewhere = work / "elsewhere" / checkpoint.name  # found through args.resume_from_checkpoint
    shutil.copytree(checkpoint, elsewhere)
    resumed = _start(work / "resumed.json", "--output-dir", str(work / "resumed"), "--store",
                     store, "--run", "t/resumed", "--resume", "last")  # fmt: skip
    clobbered = _start(work / "clobbered.json", "--output-dir", str(work / "clobbered"),
                       "--store", store, "--run", "t/clobbered", "--resume", str(elsewhere),
                       "--clobber-rng-state")  # fmt: skip
    try:
        untracked = job.build_trainer(str(work / "untracked"), [], np.random.default_rng(7))
        untracked.train(resume_from_checkpoint=True)
    finally:
        results = _finish(full, resumed, clobbered)
    return {
        "full": results[0],
        "stop": stop.losses,
        "resumed": results[1],
        "untracked": untracked.losses,
        "clobbered": results[2],
        "store": store,
        "checkpoint": checkpoint,
    }


def _resumed_steps() -> list[str]:
    return [str(s) for s in range(job.STEPS_PER_EPOCH + 1, job.EPOCHS * job.STEPS_PER_EPOCH + 1)]


def test_resumed_epochs_have_the_uninterrupted_runs_losses_bit_for_bit(
    runs: dict[str, Any],
) -> None:
    full, stop, resumed = runs["full"]["losses"], runs["stop"], runs["resumed"]["losses"]
    assert len(full) == job.EPOCHS * job.STEPS_PER_EPOCH
    assert {str(k): v for k, v in stop.items()} == {
        k: full[k] for k in ["1", "2", "3", "4", "5", "6"]
    }
    assert sorted(resumed, key=int) == _resumed_steps()
    assert resumed == {k: full[k] for k in _resumed_steps()}
    assert "augment" in runs["resumed"]["restored"]  # the generator rng_state.pth lacks
    assert runs["resumed"]["warnings"] == []


def test_without_the_callback_the_resumed_losses_differ(runs: dict[str, Any]) -> None:
    """The Trainer's own rng_state.pth restores the global generators only: the collator's
    NumPy Generator starts over, and the losses of the resumed epochs change."""
    full, untracked = runs["full"]["losses"], runs["untracked"]
    assert sorted(untracked) == [int(k) for k in _resumed_steps()]
    differing = [str(k) for k in untracked if untracked[k] != full[str(k)]]
    assert str(job.STEPS_PER_EPOCH + 1) in differing


def test_rngvault_restores_after_the_trainers_own_rng_state(runs: dict[str, Any]) -> None:
    """With rng_state.pth replaced by another seed's states, the resumed losses are still
    the uninterrupted run's: the callback sets the global generators again after the
    Trainer's _load_rng_state. The folder was found through args.resume_from_checkpoint."""
    full, clobbered = runs["full"]["losses"], runs["clobbered"]["losses"]
    assert clobbered == {k: full[k] for k in _resumed_steps()}
    assert {"augment", "torch.cpu", "numpy.global", "python.global"} <= set(
        runs["clobbered"]["restored"]
    )


def test_each_checkpoint_names_the_snapshot_taken_with_it(runs: dict[str, Any]) -> None:
    checkpoint: Path = runs["checkpoint"]
    assert {"rng_state.pth", "trainer_state.json", "rngvault.json"} <= set(os.listdir(checkpoint))
    data = json.loads((checkpoint / "rngvault.json").read_text())
    assert list(data) == ["ref"]
    ref = read_ref_file(checkpoint)
    assert ref is not None and str(ref) == data["ref"]
    assert (ref.run, ref.name, ref.rank) == ("t/stop", "epoch1", 0)
    with rngvault.Vault(runs["store"], run="t/stop") as vault:
        stored = vault.get("epoch1")
    assert stored.digest == ref.digest
    assert (stored.metadata.step, stored.metadata.epoch) == (job.STEPS_PER_EPOCH, 1)
    # Every checkpoint of the uninterrupted run holds a reference, too.
    full = runs["full"]["checkpoints"]
    assert set(full) == {f"checkpoint-{job.STEPS_PER_EPOCH * e}" for e in (1, 2, 3)}
    assert all("rngvault.json" in files for files in full.values())
    assert [s["name"] for s in runs["full"]["snapshots"]] == ["epoch1", "epoch2", "epoch3"]


# -- in this process: the real Trainer, unit by unit -------------------------------------------


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[rngvault.Vault]:
    with rngvault.Vault(str(tmp_path / "store"), run="t/unit") as vault:
        yield vault


def _train(vault: rngvault.Vault, output_dir: Path, callback: Any, **kwargs: Any) -> Any:
    """The job's Trainer with one callback, its collator's Generator tracked by ``vault``."""
    augment = vault.track(np.random.default_rng(7), "augment")
    return job.build_trainer(str(output_dir), [callback], augment, **kwargs)


def test_inside_an_epoch_the_callback_restores_after_the_trainer_too(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    """A checkpoint at step 4 of 6: the Trainer restores rng_state.pth (here another seed's)
    after fetching the first new batch; the callback sets the globals again at on_step_begin,
    and dropout draws what the uninterrupted run drew. (No augmentation: a collator's
    generator is one batch ahead at a checkpoint inside an epoch, see the module docs.)"""
    uninterrupted = job.build_trainer(str(tmp_path / "full"), [], None, save_strategy="no")
    uninterrupted.train()
    callback = RngVaultTrainerCallback(vault)
    stop = job.build_trainer(str(tmp_path / "out"), [callback, job.StopAfter(steps=4)], None,
                             save_strategy="steps", save_steps=4)  # fmt: skip
    stop.train()
    assert str(read_ref_file(tmp_path / "out" / "checkpoint-4")).startswith("t/unit/checkpoint-4@")
    job.clobber_rng_state(str(tmp_path / "out" / "checkpoint-4"))
    resumed = job.build_trainer(str(tmp_path / "out"), [callback], None,
                                save_strategy="steps", save_steps=4)  # fmt: skip
    resumed.train(resume_from_checkpoint=True)
    assert sorted(resumed.losses) == list(range(5, 19))
    assert resumed.losses == {k: uninterrupted.losses[k] for k in range(5, 19)}
    assert callback.last_restore is not None and "torch.cpu" in callback.last_restore.restored


def test_step_snapshots_record_step_epoch_and_the_latest_logged_metrics(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    callback = RngVaultTrainerCallback(vault, every_n_epochs=None, every_n_steps=4)
    trainer = _train(vault, tmp_path / "out", callback, save_strategy="no")
    trainer.train()
    vault.flush()
    infos = {info.name: info for info in vault.snapshots()}
    assert sorted(infos, key=lambda n: int(n[4:])) == ["step4", "step8", "step12", "step16"]
    for name, info in infos.items():
        step = int(name[4:])
        assert info.step == step
        assert info.epoch == step // job.STEPS_PER_EPOCH  # whole epochs completed
        # The Trainer logs a step after on_step_end: the latest log is the previous step's.
        logged = [e for e in trainer.state.log_history if e.get("step") == step - 1]
        assert logged and info.metrics == {
            k: v for k, v in logged[0].items() if k not in ("step", "epoch")
        }
    assert not os.path.exists(tmp_path / "out" / "checkpoint-4")


def test_every_n_epochs_and_an_unscheduled_checkpoint(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    """every_n_epochs=2 takes epoch2 only; the checkpoints at epochs 1 and 3 get snapshots of
    their own, named after the folder, taken with the checkpoint (the step's loss logged)."""
    callback = RngVaultTrainerCallback(vault, every_n_epochs=2)
    trainer = _train(vault, tmp_path / "out", callback)
    trainer.train()
    vault.flush()
    names = [info.name for info in vault.snapshots()]
    assert names == ["checkpoint-6", "epoch2", "checkpoint-18"]
    for step, name in ((6, "checkpoint-6"), (12, "epoch2"), (18, "checkpoint-18")):
        ref = read_ref_file(tmp_path / "out" / f"checkpoint-{step}")
        assert ref is not None and ref.name == name
        info = next(i for i in vault.snapshots() if i.name == name)
        assert info.step == step and info.digest == ref.digest
        own = [e for e in trainer.state.log_history if e.get("step") == step and "loss" in e]
        assert info.metrics["loss"] == own[0]["loss"]
    assert callback.last_ref is not None and callback.last_ref.name == "checkpoint-18"


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"every_n_epochs": 0}, ValueError, "every_n_epochs must be a positive int or None, not 0"),
        ({"every_n_steps": -3}, ValueError, "every_n_steps must be a positive int or None, not -3"),
        ({"every_n_steps": 2.5}, TypeError, "every_n_steps must be a positive int or None, not fl"),
        ({"every_n_epochs": True}, TypeError, "not bool"),
        ({"every_n_epochs": "2"}, TypeError, "not str"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_by_name(
    vault: rngvault.Vault, kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        RngVaultTrainerCallback(vault, **kwargs)


def test_a_vault_is_required() -> None:
    with pytest.raises(TypeError, match="needs an rngvault.Vault, not str"):
        RngVaultTrainerCallback("http://vault.lab:8000")  # type: ignore[arg-type]


def _save_args(tmp_path: Path) -> tuple[TrainingArguments, TrainerState, TrainerControl]:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    return args, TrainerState(global_step=5, epoch=0.8), TrainerControl()


def test_each_rank_writes_its_own_reference_file(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-5").mkdir()
    args, state, control = _save_args(tmp_path)
    for rank in (0, 1):
        with rngvault.Vault(str(tmp_path / "store"), run="t/ranks", rank=rank, world_size=2) as v:
            RngVaultTrainerCallback(v).on_save(args, state, control)
    assert ref_file_name(0) == "rngvault.json" and ref_file_name(1) == "rngvault_1.json"
    refs = {
        name: json.loads((tmp_path / "checkpoint-5" / name).read_text())["ref"]
        for name in ("rngvault.json", "rngvault_1.json")
    }
    assert refs["rngvault.json"].startswith("t/ranks/checkpoint-5@")
    assert refs["rngvault_1.json"].startswith("t/ranks/checkpoint-5@")
    assert refs["rngvault_1.json"].endswith("#1") and not refs["rngvault.json"].endswith("#1")
    assert str(read_ref_file(tmp_path / "checkpoint-5", rank=1)) == refs["rngvault_1.json"]
    # A rank with no file of its own falls back to rank 0's.
    assert str(read_ref_file(tmp_path / "checkpoint-5", rank=2)) == refs["rngvault.json"]


def test_a_checkpoint_folder_that_does_not_exist_is_named_in_a_warning(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    args, state, control = _save_args(tmp_path)
    callback = RngVaultTrainerCallback(vault)
    with pytest.warns(rngvault.ReproducibilityWarning, match="checkpoint-5 does not exist"):
        callback.on_save(args, state, control)
    assert callback.last_ref is not None and callback.last_ref.name == "checkpoint-5"
    assert not (tmp_path / "checkpoint-5").exists()


@pytest.mark.parametrize(
    "content", ['{"reference": "t/x/a@00"}', "not json", '{"ref": 3}', '{"ref": "no digest"}']
)
def test_a_malformed_reference_file_is_an_error_naming_it(tmp_path: Path, content: str) -> None:
    (tmp_path / "rngvault.json").write_text(content)
    with pytest.raises(rngvault.RngVaultError, match="rngvault.json is not an rngvault reference"):
        read_ref_file(tmp_path)


def test_resuming_a_checkpoint_without_a_reference_warns_and_restores_nothing(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    first = _train(vault, tmp_path / "out", job.StopAfter(epochs=1))  # no rngvault callback
    first.train()
    folder = tmp_path / "out" / f"checkpoint-{job.STEPS_PER_EPOCH}"
    assert "rng_state.pth" in os.listdir(folder) and "rngvault.json" not in os.listdir(folder)
    callback = RngVaultTrainerCallback(vault)
    second = _train(vault, tmp_path / "out", callback)
    with pytest.warns(rngvault.ReproducibilityWarning, match=f"{folder} holds no rngvault.json"):
        second.train(resume_from_checkpoint=True)
    assert callback.last_restore is None


def test_a_generator_the_resumed_process_does_not_track_is_named(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    _train(vault, tmp_path / "out", RngVaultTrainerCallback(vault)).train()
    checkpoint = str(tmp_path / "out" / "checkpoint-12")
    with rngvault.Vault(str(tmp_path / "store"), run="t/other") as untracking:
        callback = RngVaultTrainerCallback(untracking)
        resumed = job.build_trainer(str(tmp_path / "out"), [callback], np.random.default_rng(7))
        with pytest.warns(rngvault.ReproducibilityWarning, match="holds augment, which this"):
            resumed.train(resume_from_checkpoint=checkpoint)
    assert callback.last_restore is not None
    assert callback.last_restore.skipped == ["augment"]
    assert "torch.cpu" in callback.last_restore.restored


def test_a_checkpoint_snapshot_the_store_refuses_leaves_no_reference(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    """The resumed run reuses the run's name without tracking ``augment``: its epoch3 has
    other states than the stored one. The store refuses it and the checkpoint names nothing
    (a warning); with on_error="raise" the error stops the run."""
    _train(vault, tmp_path / "out", RngVaultTrainerCallback(vault)).train()
    vault.flush()
    (tmp_path / "out" / "checkpoint-18" / "rngvault.json").unlink()
    checkpoint = str(tmp_path / "out" / "checkpoint-12")
    with rngvault.Vault(str(tmp_path / "store"), run="t/unit") as same_run:
        callback = RngVaultTrainerCallback(same_run)
        resumed = job.build_trainer(str(tmp_path / "out"), [callback], np.random.default_rng(7))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed.train(resume_from_checkpoint=checkpoint)
    said = [str(w.message) for w in caught if w.category is rngvault.ReproducibilityWarning]
    assert any(
        "t/unit/epoch3" in m and "checkpoint-18 holds no rngvault reference" in m for m in said
    )
    assert not (tmp_path / "out" / "checkpoint-18" / "rngvault.json").exists()
    with rngvault.Vault(str(tmp_path / "store"), run="t/unit", on_error="raise") as strict:
        resumed = job.build_trainer(str(tmp_path / "out"), [RngVaultTrainerCallback(strict)],
                                    np.random.default_rng(7))  # fmt: skip
        with pytest.raises(rngvault.ConflictError, match="epoch3"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resumed.train(resume_from_checkpoint=checkpoint)


def test_resuming_from_a_folder_the_callback_cannot_see_warns(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    """Resumed from outside output_dir without args.resume_from_checkpoint: the callback
    cannot know the folder, says so, and restores nothing."""
    _train(vault, tmp_path / "a", job.StopAfter(epochs=1)).train()
    folder = tmp_path / "a" / f"checkpoint-{job.STEPS_PER_EPOCH}"
    callback = RngVaultTrainerCallback(vault)
    second = _train(vault, tmp_path / "b", callback)
    with pytest.warns(rngvault.ReproducibilityWarning, match="resume_from_checkpoint=PATH"):
        second.train(resume_from_checkpoint=str(folder))
    assert callback.last_restore is None


def test_without_transformers_the_module_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "rngvault.integrations.transformers"
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    monkeypatch.delitem(sys.modules, name)
    with pytest.raises(rngvault.MissingExtraError, match=r"pip install 'rngvault\[transformers\]'"):
        importlib.import_module(name)
