"""rngvault for the Hugging Face ``Trainer``: snapshots at epoch and step ends, a snapshot
reference in every checkpoint, and an exact restore when training resumes.

::

    vault = rngvault.Vault("http://vault.lab:8000", run="alice/bert")
    augment = vault.track(np.random.default_rng(0), "augment")   # used by the collator
    trainer = Trainer(..., callbacks=[RngVaultTrainerCallback(vault)])
    trainer.train()
    ...
    trainer.train(resume_from_checkpoint=True)   # a new process, the same callback

What happens, and when:

- ``on_epoch_end`` takes ``epoch{N}`` every ``every_n_epochs`` epochs (N: epochs completed),
  ``on_step_end`` takes ``step{N}`` every ``every_n_steps`` optimizer steps (N: the global
  step). Each records ``step`` (the global step), ``epoch`` and the scalar metrics of the
  latest logged step in ``state.log_history``. When the Trainer is about to save a checkpoint
  at that step, the snapshot is taken in ``on_save`` instead: after the checkpoint's files,
  ``rng_state.pth`` included, are written, so the snapshot and the checkpoint describe the
  same moment.
- ``on_save`` writes the reference of that snapshot into the checkpoint folder
  (``{output_dir}/checkpoint-{global_step}``): ``rngvault.json`` for rank 0,
  ``rngvault_{rank}.json`` for every other rank (each rank writes its own), each holding
  ``{"ref": "ns/run/name@digest#rank"}``. A checkpoint at a step with no snapshot due gets
  one named ``checkpoint-{global_step}``. Snapshots written into a checkpoint are taken with
  ``durable=True``: the checkpoint never names a snapshot that is not kept. One the store
  refuses (a name taken by other states) leaves the checkpoint without a reference and warns,
  or raises with ``Vault(on_error="raise")``.
- On resume (``state.global_step > 0`` at ``on_train_begin``), the checkpoint folder is
  ``args.resume_from_checkpoint`` when that is set, else ``{output_dir}/checkpoint-{step}``
  (the folder ``trainer.train(resume_from_checkpoint=True)`` picks); either must hold the
  ``trainer_state.json`` the Trainer resumed from. A folder without a reference file
  is resumed by the Trainer alone: a ``ReproducibilityWarning`` names the folder and nothing
  is restored.

Order of the restores on resume. The Trainer restores its own ``rng_state.pth`` (python,
NumPy and torch global generators only) with ``Trainer._load_rng_state``, called from
``Trainer._run_epoch`` for the first resumed epoch (``_inner_training_loop`` calls
``on_train_begin``, then per epoch ``on_epoch_begin`` and ``_run_epoch``). For a
checkpoint at an epoch end it does so before ``train_dataloader.set_epoch()`` and
``iter(train_dataloader)`` (which draws the DataLoader's base seed from the torch generator);
for a checkpoint inside an epoch, after skipping the seen batches and fetching the first new
ones, just before ``on_step_begin``. rngvault therefore restores twice, and wins:

1. ``on_epoch_begin`` of the first resumed epoch: ``vault.restore(ref)``, every generator
   (the tracked ones the Trainer knows nothing about included), all or nothing, checked
   against the reference's digest; the report is kept in ``callback.last_restore``.
2. Right after the Trainer's ``_load_rng_state``: the global generators are set again to the
   states step 1 restored. At an epoch end that is in the train DataLoader's ``set_epoch()``,
   which the callback wraps for that one call (before the DataLoader draws anything); inside
   an epoch it is the first ``on_step_begin``. ``on_step_begin`` alone would be too late at an
   epoch end: the DataLoader has drawn its base seed and the collator has run by then.

A snapshot that holds a generator this process does not track restores the others and warns
(``ReproducibilityWarning``) naming it. Checkpoints at epoch ends resume exactly. Inside an
epoch, the Trainer's DataLoader (accelerate's ``DataLoaderShard``) has already fetched and
collated the next batch when the checkpoint is saved, so a generator the collator or the
dataset draws from is one batch ahead in the snapshot (and in ``rng_state.pth``): the
generators of the model and the training step (dropout) resume exactly, a collator's draws
do not.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:
    from rngvault._errors import MissingExtraError

    raise MissingExtraError(
        "transformers", "transformers", "rngvault.integrations.transformers"
    ) from exc

from rngvault._api import capture
from rngvault._api import restore as restore_states
from rngvault._errors import RngVaultError, StoreError, warn
from rngvault._report import RestoreReport
from rngvault._seeding import ReproducibilityWarning
from rngvault._snapshot import Snapshot, SnapshotRef
from rngvault._vault import Vault

__all__ = ["RngVaultTrainerCallback", "read_ref_file", "ref_file_name"]

_TRAINER_STATE = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME


def ref_file_name(rank: int) -> str:
    """The file in a checkpoint folder that holds ``rank``'s snapshot reference:
    ``rngvault.json`` for rank 0, ``rngvault_{rank}.json`` for the others."""
    return "rngvault.json" if rank == 0 else f"rngvault_{rank}.json"


def read_ref_file(folder: str | os.PathLike[str], rank: int = 0) -> SnapshotRef | None:
    """The snapshot reference ``rank`` wrote into checkpoint ``folder``, falling back to rank
    0's; None when the folder holds neither. A file that is not ``{"ref": "..."}`` is an
    RngVaultError naming it."""
    for name in dict.fromkeys((ref_file_name(rank), ref_file_name(0))):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            text = data["ref"]
            if not isinstance(text, str):
                raise TypeError(f"'ref' is a {type(text).__name__}, not a string")
            return SnapshotRef.parse(text)
        except (OSError, ValueError, KeyError, TypeError, RngVaultError) as exc:
            raise RngVaultError(
                f"{path} is not an rngvault reference file ({exc}): it should hold "
                '{"ref": "namespace/run/name@digest"}'
            ) from None
    return None


def _every(what: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise TypeError(f"{what} must be a positive int or None, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be a positive int or None, not {value}")
    return value


def _latest_metrics(log_history: list[dict[str, Any]]) -> dict[str, int | float | str | bool]:
    """The scalar values of the latest logged step's entries (training and evaluation logs
    at the same step are separate entries); ``step`` and ``epoch`` are metadata already."""
    if not log_history:
        return {}
    step = log_history[-1].get("step")
    metrics: dict[str, int | float | str | bool] = {}
    for entry in reversed(log_history):
        if entry.get("step") != step:
            break
        for key, value in entry.items():
            if key in ("step", "epoch") or key in metrics:
                continue
            if isinstance(value, (int, float, str, bool)):
                metrics[key] = value
    return metrics


def _raises(vault: Vault) -> bool:
    """Whether ``vault`` was made with ``on_error="raise"`` (else storage errors warn)."""
    return vault.on_error == "raise"


def _checkpoint_folder(args: TrainingArguments, step: int) -> str:
    """The folder the Trainer writes its checkpoint of ``step`` to."""
    return os.path.join(str(args.output_dir), f"checkpoint-{step}")


def _epochs_completed(state: TrainerState) -> int:
    """Whole epochs completed (``state.epoch`` is a float: 1.5 is halfway through the second)."""
    return math.floor((state.epoch or 0) + 1e-6)


def _same_state(folder: str, state: TrainerState) -> bool:
    """Whether ``folder`` holds the trainer state the Trainer resumed from."""
    try:
        with open(os.path.join(folder, _TRAINER_STATE), encoding="utf-8") as file:
            saved = json.load(file)
    except (OSError, ValueError):
        return False
    return bool(
        saved.get("global_step") == state.global_step
        and saved.get("log_history") == json.loads(json.dumps(state.log_history))
    )


class RngVaultTrainerCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that snapshots ``vault``'s generators at epoch
    and/or step ends, writes the snapshot's reference into every checkpoint, and restores it
    exactly when the Trainer resumes (see the module docstring for names, files and the
    order of restores).

    Args:
        vault: the Vault whose generators (globals and tracked ones) are snapshotted.
        every_n_epochs: take ``epoch{N}`` after every this many epochs; None for none.
        every_n_steps: take ``step{N}`` after every this many optimizer steps; None for none.

    Attributes:
        last_restore: the report of the restore made on resume; None before one.
        last_ref: the reference written into the latest checkpoint; None before one.
    """

    def __init__(
        self, vault: Vault, every_n_epochs: int | None = 1, every_n_steps: int | None = None
    ) -> None:
        if not isinstance(vault, Vault):
            raise TypeError(
                f"RngVaultTrainerCallback needs an rngvault.Vault, not {type(vault).__name__}"
            )
        self.vault = vault
        self.every_n_epochs = _every("every_n_epochs", every_n_epochs)
        self.every_n_steps = _every("every_n_steps", every_n_steps)
        self.last_restore: RestoreReport | None = None
        self.last_ref: SnapshotRef | None = None
        self._due: list[tuple[str, int, int]] = []  # (name, step, epoch) waiting for on_save
        self._resume_ref: SnapshotRef | None = None
        self._globals: Snapshot | None = None  # the global states step 1 restored
        self._unhook: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return (
            f"RngVaultTrainerCallback({self.vault!r}, every_n_epochs={self.every_n_epochs}, "
            f"every_n_steps={self.every_n_steps})"
        )

    # -- snapshots --------------------------------------------------------------------------

    def _take(
        self, name: str, step: int, epoch: int, state: TrainerState, durable: bool
    ) -> Snapshot:
        return self.vault.snapshot(
            name,
            step=step,
            epoch=epoch,
            metrics=_latest_metrics(state.log_history),
            durable=durable,
        )

    def _take_due(self, state: TrainerState) -> None:
        """Take the snapshots that waited for a checkpoint that did not come."""
        due, self._due = self._due, []
        for name, step, epoch in due:
            self._take(name, step, epoch, state, durable=False)

    def _schedule(self, name: str, state: TrainerState, control: TrainerControl) -> None:
        epoch = _epochs_completed(state)
        if control.should_save:  # the Trainer saves at this step: take it with the checkpoint
            self._due.append((name, state.global_step, epoch))
        else:
            self._take(name, state.global_step, epoch, state, durable=False)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Take (or schedule for the checkpoint) ``step{global_step}`` when it is due."""
        self._take_due(state)
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._schedule(f"step{state.global_step}", state, control)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Take (or schedule for the checkpoint) ``epoch{N}``, N the epochs completed. An
        epoch cut short (``max_steps``, a stop) is not a completed epoch: no snapshot."""
        self._take_due(state)
        completed = _epochs_completed(state)
        if abs((state.epoch or 0) - completed) > 1e-6 or completed == 0:
            return
        if self.every_n_epochs is not None and completed % self.every_n_epochs == 0:
            self._schedule(f"epoch{completed}", state, control)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Write the reference of the snapshot of this moment into the checkpoint folder."""
        due, self._due = self._due, []
        if not due:
            due = [(f"checkpoint-{state.global_step}", state.global_step, _epochs_completed(state))]
        folder = _checkpoint_folder(args, state.global_step)
        try:  # names due at one step hold the same states; the checkpoint names the last
            refs = [self._take(n, step, epoch, state, durable=True).ref for n, step, epoch in due]
        except StoreError as exc:
            if _raises(self.vault):
                raise
            warn(
                f"rngvault: {exc}; checkpoint {folder} holds no rngvault reference",
                ReproducibilityWarning,
            )
            return
        ref = refs[-1]
        assert ref is not None  # a Vault's snapshot is stored somewhere
        self.last_ref = ref
        if not os.path.isdir(folder):
            warn(
                f"rngvault: the Trainer saved a checkpoint at step {state.global_step}, but "
                f"{folder} does not exist: snapshot {ref} was taken and no reference was "
                "written into the checkpoint",
                ReproducibilityWarning,
            )
            return
        path = os.path.join(folder, ref_file_name(self.vault.rank))
        with open(path + ".tmp", "w", encoding="utf-8") as file:
            json.dump({"ref": str(ref)}, file)
        os.replace(path + ".tmp", path)

    # -- resume -----------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """On resume, find the checkpoint folder and the reference it holds."""
        self._due, self._resume_ref, self._globals = [], None, None
        if state.global_step == 0:
            return
        candidates = [
            str(folder)
            for folder in (
                args.resume_from_checkpoint,
                _checkpoint_folder(args, state.global_step),
            )
            if isinstance(folder, (str, os.PathLike)) and os.path.isdir(folder)
        ]
        folder = next((c for c in candidates if _same_state(c, state)), None)
        if folder is None:
            warn(
                f"rngvault: the Trainer resumed at step {state.global_step}, but neither "
                f"args.resume_from_checkpoint ({args.resume_from_checkpoint!r}) nor "
                f"{_checkpoint_folder(args, state.global_step)!r} holds "
                "the trainer state it resumed from: nothing was restored; set "
                "TrainingArguments(resume_from_checkpoint=PATH) to the folder you resume from",
                ReproducibilityWarning,
            )
            return
        self._resume_ref = read_ref_file(folder, self.vault.rank)
        if self._resume_ref is None:
            warn(
                f"rngvault: checkpoint {folder} holds no {ref_file_name(self.vault.rank)}: "
                "the Trainer restores its own rng_state.pth (global generators only) and "
                "rngvault restores nothing",
                ReproducibilityWarning,
            )

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """First resumed epoch: restore every generator, then arm the second restore of the
        global generators for right after the Trainer's own."""
        self._take_due(state)
        ref, self._resume_ref = self._resume_ref, None
        if ref is None:
            return
        report = self.vault.restore(ref)
        self.last_restore = report
        if report.skipped:
            warn(
                f"rngvault: snapshot {ref} holds {', '.join(report.skipped)}, which this "
                "process does not track: vault.track() them before trainer.train() to "
                "restore them",
                ReproducibilityWarning,
            )
        self._globals = capture({}, include_globals=True)
        self._hook(kwargs.get("train_dataloader"))

    def _hook(self, loader: Any) -> None:
        """Make the Trainer's ``train_dataloader.set_epoch()`` call, the first thing after
        its ``_load_rng_state`` at an epoch end, restore the global generators first."""
        if loader is None:
            return
        original = getattr(loader, "set_epoch", None)
        had_own = "set_epoch" in getattr(loader, "__dict__", {})

        def set_epoch(epoch: int) -> None:
            self._reapply()
            if original is not None:
                original(epoch)

        def unhook() -> None:
            if had_own:
                loader.set_epoch = original
            else:
                loader.__dict__.pop("set_epoch", None)

        try:
            loader.set_epoch = set_epoch
        except (AttributeError, TypeError):
            return  # a loader that takes no attributes: on_step_begin still re-applies
        self._unhook = unhook

    def _reapply(self) -> None:
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        snapshot, self._globals = self._globals, None
        if snapshot is not None:
            restore_states(snapshot, {}, include_globals=True)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Inside an epoch, the Trainer restores its states just before this: re-apply the
        global generators (a no-op once ``set_epoch`` did)."""
        self._take_due(state)
        self._reapply()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Take what is still due, and drop the hook if it never fired."""
        self._take_due(state)
        self._globals = None
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
