"""A tiny Lightning training run on CPU, run in a fresh interpreter by test_lightning.py.

    python lightning_train.py MODE STORE CHECKPOINT_DIR [RESUME_FROM] [--no-callback] [--val]
        [--mid-epoch]

MODE is one of:
  full     train 3 epochs from the start
  stop     train 1 epoch (ModelCheckpoint saves CHECKPOINT_DIR/last.ckpt at its end), stop
  resume   trainer.fit(..., ckpt_path=RESUME_FROM) up to 3 epochs

ModelCheckpoint saves into CHECKPOINT_DIR at the end of every epoch.

With --no-callback, the Trainer runs without RngVaultCallback (the generators are still
made and used the same way). With --val, the module has a validation loop (so Lightning's
sanity check runs and ModelCheckpoint saves at the end of validation). With --mid-epoch, the
vault tracks the DataLoader itself, ModelCheckpoint saves every 11 steps (epoch 1, after its
third batch), and ``stop`` stops at step 11.

Prints one JSON object: per training step, the epoch, the global step, the loss
(``float.hex``, so equal means bit-identical) and the batch's sample indices; the
snapshots the vault holds; and what the restore restored.

The run draws from a dropout layer (torch's global generator), a shuffled DataLoader with a
``torch.Generator`` of its own, NumPy's global generator (input noise) and a NumPy
``Generator`` (augmentation scale, also drawn in validation); Lightning's checkpoint holds
none of them. test_lightning.py also builds its in-process runs with ``make`` and
``make_trainer``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import rngvault
from rngvault.integrations.lightning import RngVaultCallback

MAX_EPOCHS = 3
MID_EPOCH_STEP = 11  # 8 batches an epoch: epoch 1, after its third batch


class Tiny(pl.LightningModule):
    def __init__(self, augment: np.random.Generator, val: bool) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1)
        )
        self.augment = augment
        self.steps: list[dict[str, object]] = []
        if val:
            self.validation_step = self._validation_step  # Lightning looks the hook up by name

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        index, x, y = batch
        noise = torch.from_numpy(np.random.normal(0.0, 0.1, size=tuple(x.shape)).astype("float32"))
        scale = float(self.augment.uniform(0.9, 1.1))
        loss = torch.nn.functional.mse_loss(self.net((x + noise) * scale), y)
        self.log("loss", loss.detach())
        self.steps.append(
            {
                "epoch": self.current_epoch,
                "step": self.global_step,
                "loss": loss.item().hex(),
                "index": index.tolist(),
            }
        )
        return loss

    def _validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        _index, x, y = batch
        # A draw from a tracked generator that Lightning's isolate_rng does not put back
        # after the sanity check.
        scale = float(self.augment.uniform(0.9, 1.1))
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x * scale), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def make(
    vault: rngvault.Vault | None,
    *,
    val: bool = False,
    module: type[Tiny] = Tiny,
    track_loader: bool = False,
) -> tuple[Tiny, DataLoader, DataLoader | None]:
    """Seed the process, then make the module (a ``Tiny``) and its loaders; ``vault``
    tracks the loader's generator (the loader itself with ``track_loader``, which records
    its position inside an epoch) and the augmentation generator."""
    pl.seed_everything(7, verbose=False)
    data = np.random.default_rng(0)
    x = torch.from_numpy(data.normal(size=(64, 8)).astype("float32"))
    y = torch.from_numpy(data.normal(size=(64, 1)).astype("float32"))
    dataset = TensorDataset(torch.arange(64), x, y)
    loader_gen = torch.Generator().manual_seed(1)
    augment = np.random.default_rng(2)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, generator=loader_gen)
    if vault is not None:
        vault.track(loader if track_loader else loader_gen, "loader")
        vault.track(augment, "augment")
    val_loader = DataLoader(dataset, batch_size=32) if val else None
    return module(augment, val), loader, val_loader


def make_trainer(callbacks: list[pl.Callback], max_epochs: int, **options: Any) -> pl.Trainer:
    """A quiet CPU Trainer that saves checkpoints only where a ModelCheckpoint says."""
    options.setdefault("num_sanity_val_steps", 0)
    options.setdefault(
        "enable_checkpointing", any(isinstance(c, ModelCheckpoint) for c in callbacks)
    )
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **options,
    )


def main(argv: list[str]) -> None:
    flags = [a for a in argv if a.startswith("--")]
    mode, store, ckpt_dir, *resume_from = [a for a in argv if not a.startswith("--")]
    use_callback = "--no-callback" not in flags
    val = "--val" in flags
    warnings.filterwarnings("ignore", module="lightning")  # its tips about workers and logging

    mid_epoch = "--mid-epoch" in flags
    vault = rngvault.Vault(store, run="tests/lightning", probes=False)
    model, loader, val_loader = make(vault, val=val, track_loader=mid_epoch)
    checkpoint = (
        ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=MID_EPOCH_STEP, save_top_k=-1)
        if mid_epoch
        else ModelCheckpoint(dirpath=ckpt_dir, save_last=True)
    )
    callbacks: list[pl.Callback] = [checkpoint]
    callback = RngVaultCallback(vault) if use_callback else None
    if callback is not None:
        callbacks.insert(0, callback)
    options: dict[str, Any] = {"num_sanity_val_steps": 2 if val else 0}
    if mid_epoch and mode == "stop":
        options["max_steps"] = MID_EPOCH_STEP
    trainer = make_trainer(
        callbacks, 1 if mode == "stop" and not mid_epoch else MAX_EPOCHS, **options
    )
    ckpt_path = resume_from[0] if mode == "resume" else None
    started = time.perf_counter()
    trainer.fit(model, loader, val_loader, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - started
    vault.flush()
    report = callback.last_restore if callback is not None else None
    print(
        json.dumps(
            {
                "steps": model.steps,
                "seconds": seconds,
                "snapshots": [
                    {
                        "name": i.name,
                        "step": i.step,
                        "epoch": i.epoch,
                        "tags": list(i.tags),
                        "digest": i.digest,
                    }
                    for i in (vault.snapshots() if callback is not None else [])
                ],
                "restored": report.restored if report is not None else None,
            }
        )
    )
    vault.close()


if __name__ == "__main__":
    main(sys.argv[1:])
