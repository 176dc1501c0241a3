"""rngvault.integrations.lightning: RngVaultCallback with the real Lightning on CPU.

The resume tests run tests/integrations/lightning_train.py in fresh interpreters: an
uninterrupted 3-epoch run, a run that stops after one epoch (checkpoint), and its resume,
with and without the callback. The other tests fit in this process with the same module
(``make``, ``make_trainer``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import random
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from threading import Event
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("lightning")

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

import rngvault
from rngvault.integrations.lightning import RngVaultCallback
from tests.conftest import ROOT, python_env

SCRIPT = Path(__file__).with_name("lightning_train.py")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lightning_train", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_script()

# Lightning's tips (workers, logging, ckpt_path callbacks) are not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore:::lightning")


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[rngvault.Vault]:
    with rngvault.Vault(tmp_path / "store", run="tests/lightning", probes=False) as v:
        yield v


def _fit(
    vault: rngvault.Vault | None,
    callbacks: list[Callback],
    max_epochs: int = 2,
    ckpt_path: Path | None = None,
    module: type | None = None,
    **options: Any,
) -> Any:
    model, loader, val_loader = train.make(vault, module=module or train.Tiny)
    trainer = train.make_trainer(callbacks, max_epochs, **options)
    trainer.fit(model, loader, val_loader, ckpt_path=ckpt_path)
    if vault is not None:
        vault.flush()
    return model


# -- resume in fresh processes ------------------------------------------------------------


def _start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=python_env(PYTHONWARNINGS="ignore"),
    )


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Uninterrupted; stopped after epoch 0; resumed with and without the callback.

    With a validation loop: Lightning runs its sanity check again when the fit resumes,
    and the validation step draws from a tracked generator."""
    tmp = tmp_path_factory.mktemp("lightning")
    # Two at a time: the pairs do not depend on each other.
    full = _start("full", tmp / "full-store", tmp / "full-ckpt", "--val")
    stop = _start("stop", tmp / "store", tmp / "ckpt", "--val")
    results = {"full": _result(full), "stop": _result(stop)}
    checkpoint = tmp / "ckpt" / "last.ckpt"
    resume = _start("resume", tmp / "store", tmp / "resume-ckpt", checkpoint, "--val")
    bare = _start(
        "resume", tmp / "bare-store", tmp / "bare-ckpt", checkpoint, "--val", "--no-callback"
    )
    results["resume"], results["bare"] = _result(resume), _result(bare)
    return results


def _losses(run: dict[str, Any], from_epoch: int) -> list[tuple[int, str]]:
    return [(s["step"], s["loss"]) for s in run["steps"] if s["epoch"] >= from_epoch]


def test_resumed_fit_repeats_the_uninterrupted_losses_bit_for_bit(
    runs: dict[str, dict[str, Any]],
) -> None:
    """The resumed process trains epochs 1 and 2 with the uninterrupted run's losses
    (float.hex) and batches, and its epoch snapshots have the same digests."""
    full, resume = runs["full"], runs["resume"]
    assert [s["epoch"] for s in resume["steps"]] == [1] * 8 + [2] * 8
    assert _losses(resume, 1) == _losses(full, 1)
    assert [s["index"] for s in resume["steps"]] == [
        s["index"] for s in full["steps"] if s["epoch"] >= 1
    ]
    assert sorted(resume["restored"]) == [
        "augment",
        "loader",
        "numpy.global",
        "python.global",
        "torch.cpu",
    ]
    digests = {s["name"]: s["digest"] for s in full["snapshots"]}
    resumed = {s["name"]: s["digest"] for s in resume["snapshots"]}
    assert resumed == digests  # epoch0 from the stopped run, epoch1-2 from the resumed one
    assert sorted(digests) == ["epoch0", "epoch1", "epoch2"]


def test_resumed_fit_without_the_callback_draws_other_numbers(
    runs: dict[str, dict[str, Any]],
) -> None:
    """The same checkpoint resumed by Lightning alone: the same epochs, other losses
    and another batch order (Lightning's checkpoint holds no generator state)."""
    full, bare = runs["full"], runs["bare"]
    assert [s["step"] for s in bare["steps"]] == [s for s, _ in _losses(full, 1)]
    assert _losses(bare, 1) != _losses(full, 1)
    first_batch = next(s for s in full["steps"] if s["epoch"] == 1)["index"]
    assert bare["steps"][0]["index"] != first_batch


def test_a_mid_epoch_checkpoint_resumes_at_the_next_batch_when_the_loader_is_tracked(
    tmp_path: Path,
) -> None:
    """With the DataLoader itself tracked, a checkpoint at step 11 (epoch 1, after three of
    its eight batches) resumed in a fresh process: Lightning finishes epoch 1 with the
    uninterrupted run's remaining batches and losses, bit for bit, and epoch 2 too."""
    full = _start("full", tmp_path / "full-store", tmp_path / "full-ckpt", "--mid-epoch")
    stop = _start("stop", tmp_path / "store", tmp_path / "ckpt", "--mid-epoch")
    full_run, stopped = _result(full), _result(stop)
    assert [s["step"] for s in stopped["steps"]] == list(range(11))
    (checkpoint,) = (tmp_path / "ckpt").glob("*step=11*.ckpt")
    resumed = _result(
        _start("resume", tmp_path / "store", tmp_path / "resume-ckpt", checkpoint, "--mid-epoch")
    )
    tail = [s for s in full_run["steps"] if s["step"] >= 11]
    assert [(s["step"], s["loss"], s["index"]) for s in resumed["steps"]] == [
        (s["step"], s["loss"], s["index"]) for s in tail
    ]
    assert resumed["steps"][0]["epoch"] == 1 and len(tail) == 13


# -- snapshots ------------------------------------------------------------------------------


def test_epoch_snapshots_carry_step_epoch_and_the_logged_loss(vault: rngvault.Vault) -> None:
    model = _fit(vault, [RngVaultCallback(vault)])
    infos = {i.name: i for i in vault.snapshots()}
    assert sorted(infos) == ["epoch0", "epoch1"]
    assert (infos["epoch0"].step, infos["epoch0"].epoch) == (8, 0)
    assert (infos["epoch1"].step, infos["epoch1"].epoch) == (16, 1)
    # the epoch's last logged loss, as the module saw it
    assert infos["epoch1"].metrics == {"loss": float.fromhex(model.steps[15]["loss"])}
    assert set(infos["epoch1"].generators) == {
        "python.global",
        "numpy.global",
        "torch.cpu",
        "loader",
        "augment",
    }


def test_every_n_epochs_counts_from_the_first_epoch(vault: rngvault.Vault) -> None:
    _fit(vault, [RngVaultCallback(vault, every_n_epochs=2)], max_epochs=3)
    assert [i.name for i in vault.snapshots()] == ["epoch1"]


def test_every_n_steps_names_snapshots_by_global_step(vault: rngvault.Vault) -> None:
    _fit(vault, [RngVaultCallback(vault, every_n_epochs=None, every_n_steps=3)])
    infos = vault.snapshots()
    assert [(i.name, i.step, i.epoch) for i in infos] == [
        ("step3", 3, 0),
        ("step6", 6, 0),
        ("step9", 9, 1),
        ("step12", 12, 1),
        ("step15", 15, 1),
    ]


def test_every_n_steps_counts_optimizer_steps_under_gradient_accumulation(
    vault: rngvault.Vault,
) -> None:
    """16 batches, 2 per optimizer step: 8 steps, one snapshot per third step."""
    callback = RngVaultCallback(vault, every_n_epochs=0, every_n_steps=3)
    _fit(vault, [callback], accumulate_grad_batches=2)
    assert [(i.name, i.step) for i in vault.snapshots()] == [("step3", 3), ("step6", 6)]


def test_a_step_snapshot_restores_the_states_of_that_step(vault: rngvault.Vault) -> None:
    """The states a step snapshot holds are the ones the next step starts from: restored,
    the tracked generators draw what they drew after it."""
    seen: dict[str, Any] = {}

    class Peek(Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
            if trainer.global_step == 3:
                seen["augment"] = module.augment.bit_generator.state
                seen["torch"] = torch.get_rng_state()

    _fit(vault, [RngVaultCallback(vault, every_n_epochs=None, every_n_steps=3), Peek()])
    vault.restore("step3")
    augment = vault.tracked["augment"]
    assert augment.bit_generator.state == seen["augment"]
    assert torch.equal(torch.get_rng_state(), seen["torch"])


# -- checkpoints ----------------------------------------------------------------------------


def test_a_checkpoint_holds_the_reference_of_its_epoch_snapshot(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    """No generator moves between the epoch's snapshot and ModelCheckpoint's save: the
    checkpoint names that snapshot (and no other is taken)."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(vault, [RngVaultCallback(vault), checkpoint], max_epochs=1)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert isinstance(saved["rngvault"], str)
    assert saved["rngvault"] == str(vault.get("epoch0").ref)
    assert rngvault.load_ref(saved) == vault.get("epoch0").ref
    assert [i.name for i in vault.snapshots()] == ["epoch0"]


def test_a_step_checkpoint_reuses_the_step_snapshot_of_the_same_moment(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    callback = RngVaultCallback(vault, every_n_epochs=None, every_n_steps=4)
    _fit(vault, [callback, checkpoint], max_epochs=1)
    saved = torch.load(tmp_path / "ckpt" / "epoch=0-step=4.ckpt", weights_only=True)
    assert rngvault.load_ref(saved) == vault.get("step4").ref
    assert [i.name for i in vault.snapshots()] == ["step4", "step8"]


class _DrawsAtEpochEnd(train.Tiny):  # type: ignore[misc,name-defined]
    """Draws in on_train_epoch_end, which Lightning calls after the callback's hook and
    before ModelCheckpoint's."""

    def on_train_epoch_end(self) -> None:
        torch.rand(3)


def test_a_checkpoint_after_draws_gets_a_snapshot_of_its_own_moment(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    callbacks = [RngVaultCallback(vault), checkpoint]
    _fit(vault, callbacks, max_epochs=1, module=_DrawsAtEpochEnd)
    ref = rngvault.load_ref(torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True))
    assert ref is not None and ref.name == "step8"
    infos = {i.name: i for i in vault.snapshots()}
    assert infos["step8"].tags == ("checkpoint",)
    assert (infos["step8"].step, infos["step8"].epoch) == (8, 0)
    # the two snapshots differ by the draw, and only in torch's global generator
    a, b = vault.get("epoch0"), vault.get("step8")
    assert a.states["torch.cpu"] != b.states["torch.cpu"]
    assert {n: s for n, s in a.states.items() if n != "torch.cpu"} == {
        n: s for n, s in b.states.items() if n != "torch.cpu"
    }
    # the checkpoint's snapshot is where the generators were when it was saved (and
    # nothing drew after it: the fit ended there)
    assert rngvault.capture().states["torch.cpu"] == b.states["torch.cpu"]


def test_a_checkpoint_without_a_reference_resumes_with_a_warning(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    plain = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(None, [plain], max_epochs=1)
    callback = RngVaultCallback(vault)
    with (
        pytest.warns(rngvault.ReproducibilityWarning, match="holds no rngvault snapshot"),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", module="lightning")  # its own notes on resuming
        warnings.filterwarnings("always", category=rngvault.ReproducibilityWarning)
        again = ModelCheckpoint(dirpath=tmp_path / "ckpt2", save_last=True)
        model = _fit(vault, [callback, again], ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert [s["epoch"] for s in model.steps] == [1] * 8  # the fit went on
    assert callback.last_restore is None
    assert [i.name for i in vault.snapshots()] == ["epoch1"]


def test_validate_from_a_checkpoint_neither_restores_nor_warns(
    vault: rngvault.Vault, tmp_path: Path
) -> None:
    """Only a fit resumes: validating from a checkpoint without a reference is quiet."""
    plain = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(None, [plain], max_epochs=1)
    callback = RngVaultCallback(vault)
    model, _loader, val_loader = train.make(vault, val=True)
    trainer = train.make_trainer([callback], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rngvault.ReproducibilityWarning)
        trainer.validate(model, val_loader, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert callback.last_restore is None


# -- checkpoints name only stored snapshots ------------------------------------------------


class _Strategy:
    """Reduces a decision over this rank and peers whose answers are given in order."""

    def __init__(self, peers: list[bool]) -> None:
        self.peers = peers

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        peer = self.peers.pop(0) if self.peers else True
        return decision and peer


def _trainer(global_step: int = 5, epoch: int = 0, peers: tuple[bool, ...] = ()) -> Any:
    """What RngVaultCallback reads of a Trainer (``peers``: the other ranks' answers to
    its collective decisions, in order)."""
    return SimpleNamespace(
        global_step=global_step,
        current_epoch=epoch,
        callback_metrics={},
        strategy=_Strategy(list(peers)),
        global_rank=0,
        world_size=1,
    )


def _hold_puts(vault: rngvault.Vault, monkeypatch: pytest.MonkeyPatch, hold: float) -> Event:
    """Make ``vault``'s store slow: each put waits until the returned event is set, or for
    ``hold`` seconds."""
    release = Event()
    put = vault.store.put

    def slow_put(*args: Any) -> bool:
        release.wait(hold)
        return put(*args)

    monkeypatch.setattr(vault.store, "put", slow_put)
    return release


def _take_other_states(vault: rngvault.Vault, name: str) -> None:
    """Store ``name`` with states this process then leaves behind."""
    vault.snapshot(name, durable=True)
    random.random()


@pytest.mark.parametrize("reused", [False, True], ids=["taken-at-checkpoint", "epoch-reused"])
def test_a_checkpoint_reference_is_readable_from_the_store_when_the_hook_returns(
    vault: rngvault.Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reused: bool
) -> None:
    """A slow store: on_save_checkpoint returns only once the snapshot it names is stored,
    so a process killed right after saving the checkpoint can still be resumed from it. A
    second Vault on the same directory reads it before the first one is flushed."""
    release = _hold_puts(vault, monkeypatch, hold=0.3)
    callback, checkpoint = RngVaultCallback(vault), {}
    if reused:
        callback.on_train_epoch_end(_trainer(), None)  # type: ignore[arg-type]
    callback.on_save_checkpoint(_trainer(), None, checkpoint)  # type: ignore[arg-type]
    ref = rngvault.load_ref(checkpoint)
    assert ref is not None and ref.name == ("epoch0" if reused else "step5")
    with rngvault.Vault(tmp_path / "store", run="tests/lightning") as other:
        stored = other.get(ref.name, digest=ref.digest)
    release.set()
    assert stored.digest == ref.digest


def test_epoch_and_step_snapshots_do_not_wait_for_the_store(
    vault: rngvault.Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a checkpoint's snapshot waits: with the store's puts held, the epoch and step
    snapshots are not stored yet when their hooks return (they are once released)."""
    release = _hold_puts(vault, monkeypatch, hold=30)
    callback = RngVaultCallback(vault, every_n_steps=5)
    callback.on_train_batch_end(_trainer(global_step=5), None, None, None, 4)  # type: ignore[arg-type]
    callback.on_train_epoch_end(_trainer(global_step=5), None)  # type: ignore[arg-type]
    with rngvault.Vault(tmp_path / "store", run="tests/lightning") as other:
        with pytest.raises(rngvault.NotFoundError):
            other.get("step5")
        release.set()
        vault.flush()
        assert [i.name for i in other.snapshots()] == ["step5", "epoch0"]


@pytest.mark.filterwarnings("ignore::rngvault.StoreWarning")  # the Vault's own, as well
@pytest.mark.parametrize("reused", [False, True], ids=["taken-at-checkpoint", "epoch-reused"])
def test_a_checkpoint_whose_snapshot_the_store_refuses_holds_no_reference(
    vault: rngvault.Vault, reused: bool
) -> None:
    """The name is taken by other states (the epoch's snapshot was refused in the
    background, or the one taken for the checkpoint is): the checkpoint gets no reference,
    which would fail the resume, and a ReproducibilityWarning says which snapshot and why."""
    name = "epoch0" if reused else "step5"
    _take_other_states(vault, name)
    callback, checkpoint = RngVaultCallback(vault), {"state_dict": {}}
    with pytest.warns(rngvault.ReproducibilityWarning, match=f"{name}.*other states") as caught:
        if reused:
            callback.on_train_epoch_end(_trainer(), None)  # type: ignore[arg-type]
        callback.on_save_checkpoint(_trainer(), None, checkpoint)  # type: ignore[arg-type]
        vault.flush()
    assert checkpoint == {"state_dict": {}}
    (said,) = [w for w in caught if issubclass(w.category, rngvault.ReproducibilityWarning)]
    assert "holds no rngvault reference" in str(said.message)


@pytest.mark.parametrize("reused", [False, True], ids=["taken-at-checkpoint", "epoch-reused"])
def test_a_refused_checkpoint_snapshot_raises_with_on_error_raise(
    tmp_path: Path, reused: bool
) -> None:
    name = "epoch0" if reused else "step5"
    with rngvault.Vault(tmp_path / "store", run="tests/lightning", on_error="raise") as vault:
        _take_other_states(vault, name)
        callback, checkpoint = RngVaultCallback(vault), {}
        if reused:
            callback.on_train_epoch_end(_trainer(), None)  # type: ignore[arg-type]
        with pytest.raises(rngvault.ConflictError, match=f"{name}.*other states"):
            callback.on_save_checkpoint(_trainer(), None, checkpoint)  # type: ignore[arg-type]
        assert checkpoint == {}
        # The epoch snapshot's own refusal, when the writer met it after the hook began,
        # is the Vault's to raise (from the next flush), as on_error="raise" says.
        with contextlib.suppress(rngvault.ConflictError):
            vault.flush()


def test_a_checkpoint_holds_no_reference_when_another_rank_could_not_store_its_snapshot(
    tmp_path: Path,
) -> None:
    """A resume restores each rank its own states: this rank's snapshot is stored, another
    rank's is not (the second collective decision): no reference, a warning, or a
    StoreError with on_error="raise"."""
    trainer = _trainer(peers=(True, False))
    with rngvault.Vault(tmp_path / "store", run="tests/lightning", probes=False) as vault:
        checkpoint: dict[str, Any] = {}
        with pytest.warns(rngvault.ReproducibilityWarning, match="step5 of another rank"):
            RngVaultCallback(vault).on_save_checkpoint(trainer, None, checkpoint)  # type: ignore[arg-type]
        assert checkpoint == {}
        assert vault.get("step5").metadata.tags == ("checkpoint",)  # this rank's is stored
    trainer = _trainer(peers=(True, False))
    with rngvault.Vault(tmp_path / "raise", run="tests/lightning", on_error="raise") as vault:
        with pytest.raises(rngvault.StoreError, match="step5 of another rank"):
            RngVaultCallback(vault).on_save_checkpoint(trainer, None, checkpoint)  # type: ignore[arg-type]
        assert checkpoint == {}


# -- ranks and arguments ------------------------------------------------------------------


def test_a_vault_made_for_another_rank_is_refused_when_the_fit_starts(tmp_path: Path) -> None:
    with rngvault.Vault(tmp_path / "store", run="tests/lightning", rank=1, world_size=2) as v:
        with pytest.raises(rngvault.RngVaultError, match="rank 1 of world size 2.*rank 0 of"):
            _fit(v, [RngVaultCallback(v)], max_epochs=1)
        with pytest.raises(rngvault.NotFoundError):
            v.snapshots()  # nothing was stored under the wrong rank


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every_n_epochs": -1}, ValueError, "every_n_epochs must be a positive int.*got -1"),
        ({"every_n_epochs": 1.5}, TypeError, "every_n_epochs .*got float 1.5"),
        ({"every_n_epochs": "2"}, TypeError, "every_n_epochs .*got str '2'"),
        ({"every_n_epochs": True}, TypeError, "every_n_epochs .*got bool True"),
        ({"every_n_steps": -3}, ValueError, "every_n_steps must be a positive int.*got -3"),
    ],
)
def test_bad_intervals_are_refused_by_name(
    vault: rngvault.Vault, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RngVaultCallback(vault, **kwargs)


def test_the_vault_must_be_a_vault(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="needs an rngvault.Vault, not str"):
        RngVaultCallback(str(tmp_path))  # type: ignore[arg-type]


def test_without_lightning_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "rngvault.integrations.lightning")
    with pytest.raises(rngvault.MissingExtraError, match=r"pip install 'rngvault\[lightning\]'"):
        importlib.import_module("rngvault.integrations.lightning")
