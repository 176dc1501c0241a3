"""``RngVaultCallback``: rngvault snapshots in a Lightning ``Trainer``, restored exactly on resume.

::

    vault = rngvault.Vault(store, run="alice/mnist")
    loader_gen = vault.track(torch.Generator().manual_seed(0), "loader")
    trainer = Trainer(callbacks=[RngVaultCallback(vault)], max_epochs=10)
    trainer.fit(model, DataLoader(ds, shuffle=True, generator=loader_gen))
    ...  # another process, another day:
    trainer.fit(model, DataLoader(ds, shuffle=True, generator=loader_gen), ckpt_path="last.ckpt")

Snapshots are named ``epoch{N}`` (at the end of every ``every_n_epochs``-th training epoch)
and ``step{N}`` (after every ``every_n_steps``-th optimizer step), with the trainer's
``global_step``, ``current_epoch`` and its scalar ``callback_metrics``.

Each checkpoint Lightning saves holds the reference of the snapshot of the moment it was
saved (``rngvault.save_ref``, key ``"rngvault"``): the latest snapshot if no tracked
generator moved since, else one taken then, named ``step{global_step}`` and tagged
``checkpoint``. ``ModelCheckpoint`` saves after this callback's ``on_train_epoch_end`` and
``on_train_batch_end``, so the epoch's or step's snapshot usually serves; the module's own
``on_train_epoch_end`` runs between the two, and a draw there gets the checkpoint a
snapshot of its own.

Epoch and step snapshots are stored in the background; the snapshot a checkpoint names is
stored before ``on_save_checkpoint`` returns (taken with ``durable=True``; a reused one is
put again with ``durable=True`` under its name, which the store accepts as the same
snapshot), so a process killed right after saving a checkpoint can be resumed from it. One
the store refuses (its name taken by other states) leaves the checkpoint without a
reference and warns (``ReproducibilityWarning``), or raises with
``Vault(on_error="raise")``; the same when another rank's could not be stored.

Lightning saves no generator state in its checkpoints: a resumed fit starts from whatever
the new process seeded. On ``trainer.fit(..., ckpt_path=...)`` the order is:

1. ``setup``, then ``on_load_checkpoint``: the callback reads the reference;
2. ``on_fit_start``: the callback restores the snapshot (each rank its own states);
3. the validation sanity check, if any, inside Lightning's ``isolate_rng``, which puts the
   global generators back afterwards but not tracked ones: in ``on_sanity_check_end`` the
   callback restores the snapshot again;
4. the train DataLoader's iterator is made (drawing its base seed from the loader's
   generator), then ``on_train_start`` and ``on_train_epoch_start``: too late for a
   restore, which is why it happens in ``on_fit_start``.

Draws made by the module's ``on_fit_start`` (called after the callback's) happen after the
restore. A checkpoint saved mid-epoch restores the generators of that step, and Lightning
finishes the interrupted epoch with a new iterator over the train DataLoader: with the
DataLoader itself tracked (``vault.track(loader, "loader")``), that iterator resumes at the
next batch the uninterrupted run saw; with only its generator tracked, the rest of the
epoch comes in another order.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        from rngvault._errors import MissingExtraError

        raise MissingExtraError(
            "lightning", "lightning", "rngvault.integrations.lightning"
        ) from None

import torch

from rngvault._api import capture
from rngvault._checkpoint import load_ref, save_ref
from rngvault._errors import RngVaultError, StoreError, warn
from rngvault._report import RestoreReport
from rngvault._seeding import ReproducibilityWarning
from rngvault._snapshot import Snapshot, SnapshotRef
from rngvault._vault import Vault

__all__ = ["RngVaultCallback"]


def _every(what: str, value: object) -> int | None:
    """A snapshot interval: a positive int, or None / 0 for never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"RngVaultCallback: {what} must be a positive int, or None or 0 to take no such "
            f"snapshots; got {type(value).__name__} {value!r}"
        )
    if value < 0:
        raise ValueError(
            f"RngVaultCallback: {what} must be a positive int, or None or 0 to take no such "
            f"snapshots; got {value}"
        )
    return int(value) or None


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, int | float | bool]:
    """The scalars of a trainer's ``callback_metrics``: numbers as they are, one-element
    tensors and NumPy scalars as Python numbers; anything else is left out."""
    out: dict[str, int | float | bool] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        elif not isinstance(value, (bool, int, float)) and hasattr(value, "item"):
            if getattr(value, "size", 1) != 1:
                continue
            value = value.item()
        if isinstance(value, (bool, int, float)):
            out[key] = value
    return out


class RngVaultCallback(pl.Callback):
    """Snapshot a Lightning run's generators into ``vault`` and restore them on resume.

    Args:
        vault: the Vault that takes the snapshots; track your own generators with
            ``vault.track`` (a DataLoader's ``torch.Generator``, NumPy ``Generator`` s)
            before ``trainer.fit``, or in the module's ``setup``. Its rank and world size
            must be the trainer's (``Vault(..., rank=trainer.global_rank,
            world_size=trainer.world_size)``); a mismatch is an error when the fit starts.
        every_n_epochs: snapshot ``epoch{N}`` at the end of every N-th training epoch
            (N counted from 0, as ``trainer.current_epoch``); None or 0: never.
        every_n_steps: snapshot ``step{N}`` after every N-th optimizer step (N is
            ``trainer.global_step``); None or 0: never.

    Attributes:
        latest: the latest snapshot this callback took (or put into a checkpoint).
        last_restore: the report of the latest restore, None before any.

    Saving a checkpoint puts the reference of the snapshot of that moment into it
    (``checkpoint["rngvault"]``), once that snapshot is stored; one the store refuses
    leaves the checkpoint without a reference, with a ``ReproducibilityWarning`` (or the
    ``StoreError`` raised, with ``Vault(on_error="raise")``). Resuming a fit from a
    checkpoint restores that snapshot on every rank (each rank its own states) in
    ``on_fit_start``, and again in ``on_sanity_check_end`` when Lightning runs its
    validation sanity check. A checkpoint without a reference resumes with a
    ``ReproducibilityWarning`` and the generators as they are. Generators that the
    snapshot holds but this process does not track, or the other way round, are named in
    a ``ReproducibilityWarning``.
    """

    def __init__(
        self,
        vault: Vault,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
    ) -> None:
        if not isinstance(vault, Vault):
            raise TypeError(f"RngVaultCallback needs an rngvault.Vault, not {type(vault).__name__}")
        self.vault = vault
        self.every_n_epochs = _every("every_n_epochs", every_n_epochs)
        self.every_n_steps = _every("every_n_steps", every_n_steps)
        self.latest: Snapshot | None = None
        self._stored = False  # latest is known to be stored (durable), not only queued
        self.last_restore: RestoreReport | None = None
        self._names: set[str] = set()
        self._last_step: int | None = None
        self._resume: SnapshotRef | None = None
        self._fitting = False

    def __repr__(self) -> str:
        return (
            f"RngVaultCallback({self.vault!r}, every_n_epochs={self.every_n_epochs}, "
            f"every_n_steps={self.every_n_steps})"
        )

    # -- ranks ----------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check that the Vault's rank and world size are the trainer's."""
        rank, size = trainer.global_rank, trainer.world_size
        if (self.vault.rank, self.vault.world_size) != (rank, size):
            raise RngVaultError(
                f"the Vault was made for rank {self.vault.rank} of world size "
                f"{self.vault.world_size}, but this trainer process is rank {rank} of world "
                f"size {size}: each rank's snapshots would be stored under the wrong rank. "
                "Create the Vault with rank=trainer.global_rank, "
                "world_size=trainer.world_size (after making the Trainer), or inside the "
                "module's setup()"
            )

    # -- taking snapshots -----------------------------------------------------------------

    def _take(
        self, trainer: pl.Trainer, name: str, tags: tuple[str, ...] = (), durable: bool = False
    ) -> Snapshot:
        self._names.add(name)  # also when refused: the name is not free
        snapshot = self.vault.snapshot(
            name,
            step=trainer.global_step,
            epoch=trainer.current_epoch,
            metrics=scalar_metrics(trainer.callback_metrics),
            tags=tags,
            durable=durable,
        )
        self.latest, self._stored = snapshot, durable
        return snapshot

    def _store_latest(self) -> Snapshot:
        """``latest``, stored: put again with ``durable=True`` under its name, with its
        step, epoch, tags and metrics. The states are the same (checked by the caller), so
        the digest and the reference are too, and the store accepts it as the snapshot it
        holds; if it refused or lost the first put, this one says so (StoreError)."""
        latest = self.latest
        assert latest is not None and latest.ref is not None
        if not self._stored:
            meta = latest.metadata
            self.vault.snapshot(
                latest.ref.name,
                step=meta.step,
                epoch=meta.epoch,
                metrics=meta.metrics,
                tags=meta.tags,
                durable=True,
            )
            self._stored = True
        return latest

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Snapshot ``step{global_step}`` after every ``every_n_steps``-th optimizer step."""
        step = trainer.global_step
        # global_step counts optimizer steps: with gradient accumulation several batches
        # end on the same step, and only the first of them is the step's end.
        if self.every_n_steps is None or step == 0 or step == self._last_step:
            return
        if step % self.every_n_steps == 0:
            self._last_step = step
            self._take(trainer, f"step{step}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Snapshot ``epoch{current_epoch}`` at the end of every ``every_n_epochs``-th epoch."""
        epoch = trainer.current_epoch
        if self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0:
            self._take(trainer, f"epoch{epoch}")

    # -- checkpoints ----------------------------------------------------------------------

    def _unchanged_since_latest(self) -> bool:
        """True when every generator the Vault tracks is where the latest snapshot left it."""
        latest = self.latest
        if latest is None:
            return False
        now = capture(self.vault.tracked, include_globals=False).states
        return now.keys() == latest.states.keys() and all(
            now[name] == state for name, state in latest.states.items()
        )

    def _checkpoint_name(self, step: int) -> str:
        name, n = f"step{step}", 1
        while name in self._names:
            n += 1
            name = f"step{step}-{n}"
        return name

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Put the reference of the snapshot of this moment into ``checkpoint``, once that
        snapshot is stored (no reference, and a warning or an error, if it cannot be)."""
        unchanged = self._unchanged_since_latest()
        # Every rank saves (Lightning writes rank 0's file): they agree on one name.
        unchanged = bool(trainer.strategy.reduce_boolean_decision(unchanged, all=True))
        if unchanged and self.latest is not None:
            assert self.latest.ref is not None
            name = self.latest.ref.name
        else:
            name = self._checkpoint_name(trainer.global_step)
        error: StoreError | None = None
        try:
            if unchanged and self.latest is not None:
                snapshot = self._store_latest()
            else:
                snapshot = self._take(trainer, name, tags=("checkpoint",), durable=True)
        except StoreError as exc:
            error = exc
        # A resume restores each rank its own states: every rank's must be stored.
        everywhere = bool(trainer.strategy.reduce_boolean_decision(error is None, all=True))
        if everywhere:
            save_ref(checkpoint, snapshot)
            return
        why = (
            f"snapshot {name} could not be stored ({error})"
            if error is not None
            else f"snapshot {name} of another rank could not be stored"
        )
        if self.vault.on_error == "raise":
            if error is not None:
                raise error
            raise StoreError(f"rngvault: {why}")
        warn(
            f"rngvault: {why}; the checkpoint saved at step {trainer.global_step} holds no "
            "rngvault reference: resuming from it will not restore the generators",
            ReproducibilityWarning,
        )

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Read the checkpoint's snapshot reference; a fit restores it (``on_fit_start``)."""
        if trainer.state.fn != "fit":
            return  # validate/test/predict from a checkpoint draw nothing to resume
        ref = load_ref(checkpoint)
        self._resume = ref
        if ref is None:
            warn(
                "rngvault: the checkpoint holds no rngvault snapshot reference (it was saved "
                "without RngVaultCallback, or its snapshot could not be stored): the "
                "generators are not restored, so the resumed run will not draw what the "
                "interrupted one would have",
                ReproducibilityWarning,
            )
        elif self._fitting:  # strategies that restore the checkpoint after on_fit_start
            self._restore()

    # -- restoring ------------------------------------------------------------------------

    def _restore(self) -> None:
        assert self._resume is not None
        report = self.vault.restore(self._resume)
        self.last_restore = report
        unmatched = report.skipped + report.missing
        if unmatched:
            warn(
                f"rngvault: restoring {self._resume.name} left generators as they were: "
                f"{', '.join(unmatched)} (the snapshot and this process do not track the "
                "same generators)",
                ReproducibilityWarning,
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the checkpoint's snapshot, if the fit resumes from one."""
        self._fitting = True
        if self._resume is not None:
            self._restore()

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Undo what the sanity check drew from tracked generators (Lightning's
        ``isolate_rng`` puts back only the global ones)."""
        if self._resume is not None and self._fitting:
            self._restore()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Forget the resumed checkpoint; the next fit starts from its own."""
        self._fitting = False
        self._resume = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Same as ``on_fit_end``, for a fit that ended with an exception."""
        self._fitting = False
        self._resume = None
