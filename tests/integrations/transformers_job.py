"""A tiny Hugging Face Trainer run for the RngVaultTrainerCallback tests (CPU, no downloads).

A one-layer BERT built from a config, with dropout, trains on 24 random sequences; the data
collator masks tokens at random with a NumPy ``Generator`` the vault tracks as ``augment``,
a generator the Trainer's own ``rng_state.pth`` knows nothing about. Every micro-batch's
loss is recorded exactly (``float.hex``).

Run as a script, it trains (or resumes) and writes what it saw as JSON::

    python transformers_job.py OUT.json --output-dir DIR --store STORE --run ns/run
        [--stop-after-epoch N | --stop-after-step N] [--resume PATH|last] [--no-callback]
        [--clobber-rng-state] [--every-n-steps N] [--save-strategy epoch|steps] [--save-steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import warnings
from typing import Any

import numpy as np
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import rngvault
from rngvault.integrations.transformers import RngVaultTrainerCallback

EXAMPLES = 24
BATCH = 4
EPOCHS = 3
STEPS_PER_EPOCH = EXAMPLES // BATCH


class Sequences(torch.utils.data.Dataset[dict[str, Any]]):
    """Fixed random token sequences and labels (drawn once, from their own seed)."""

    def __init__(self) -> None:
        data = np.random.default_rng(123)
        self.ids = data.integers(2, 32, size=(EXAMPLES, 8))
        self.labels = data.integers(0, 2, size=EXAMPLES)

    def __len__(self) -> int:
        return EXAMPLES

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": int(self.labels[i])}


class MaskingCollator:
    """Stacks a batch and replaces a quarter of the tokens, at random, by token 1 (with no
    ``rng``, none)."""

    def __init__(self, rng: np.random.Generator | None) -> None:
        self.rng = rng

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor(np.stack([f["input_ids"] for f in features]))
        if self.rng is not None:
            ids = ids.masked_fill(torch.from_numpy(self.rng.random(tuple(ids.shape)) < 0.25), 1)
        return {
            "input_ids": ids,
            "labels": torch.tensor([f["labels"] for f in features]),
        }


class LossRecordingTrainer(Trainer):
    """Records each micro-batch's loss, exactly, keyed by the global step it belongs to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.losses: dict[int, str] = {}

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        value = loss[0] if isinstance(loss, tuple) else loss
        self.losses[self.state.global_step + 1] = float(value.detach()).hex()
        return loss


class StopAfter(TrainerCallback):  # type: ignore[misc]
    """Stops training after ``epochs`` epochs or ``steps`` steps (after the checkpoint the
    Trainer saves at that point)."""

    def __init__(self, epochs: int | None = None, steps: int | None = None) -> None:
        self.epochs = epochs
        self.steps = steps

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.steps is not None and state.global_step >= self.steps:
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.epochs is not None and state.epoch >= self.epochs:
            control.should_training_stop = True


def build_trainer(
    output_dir: str,
    callbacks: list[Any],
    augment: np.random.Generator | None,
    *,
    save_strategy: str = "epoch",
    save_steps: int = 500,
    resume_from_checkpoint: str | None = None,
) -> LossRecordingTrainer:
    """The Trainer every test uses: tiny BERT with dropout, CPU, no reporting, seed 0."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_prob=0.2,
        attention_probs_dropout_prob=0.2,
        num_labels=2,
    )
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy=save_strategy,
        save_steps=save_steps,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        resume_from_checkpoint=resume_from_checkpoint,
    )
    return LossRecordingTrainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=Sequences(),
        data_collator=MaskingCollator(augment),
        callbacks=callbacks,
    )


def clobber_rng_state(folder: str) -> None:
    """Replace the checkpoint's rng_state.pth with states from another seed."""
    random.seed(999)
    np.random.seed(999)
    torch.manual_seed(999)
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    torch.save(states, os.path.join(folder, "rng_state.pth"))


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)  # as the tests' own process does
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--stop-after-epoch", type=int)
    parser.add_argument("--stop-after-step", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--no-callback", action="store_true")
    parser.add_argument("--clobber-rng-state", action="store_true")
    parser.add_argument("--every-n-steps", type=int)
    parser.add_argument("--save-strategy", default="epoch")
    parser.add_argument("--save-steps", type=int, default=500)
    opts = parser.parse_args(argv)

    resume: str | bool | None = None
    if opts.resume == "last":
        resume = True
    elif opts.resume:
        resume = opts.resume
        if opts.clobber_rng_state:
            clobber_rng_state(opts.resume)

    callbacks: list[Any] = []
    vault = None
    callback = None
    if opts.no_callback:
        augment = np.random.default_rng(7)
    else:
        vault = rngvault.Vault(opts.store, run=opts.run)
        augment = vault.track(np.random.default_rng(7), "augment")
        callback = RngVaultTrainerCallback(vault, every_n_steps=opts.every_n_steps)
        callbacks.append(callback)
    if opts.stop_after_epoch or opts.stop_after_step:
        callbacks.append(StopAfter(opts.stop_after_epoch, opts.stop_after_step))
    trainer = build_trainer(
        opts.output_dir,
        callbacks,
        augment,
        save_strategy=opts.save_strategy,
        save_steps=opts.save_steps,
        resume_from_checkpoint=resume if isinstance(resume, str) else None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", rngvault.RngVaultWarning)
        trainer.train(resume_from_checkpoint=resume)
    result: dict[str, Any] = {
        "losses": trainer.losses,
        "warnings": [
            str(w.message) for w in caught if issubclass(w.category, rngvault.RngVaultWarning)
        ],
        "checkpoints": {
            name: sorted(os.listdir(os.path.join(opts.output_dir, name)))
            for name in sorted(os.listdir(opts.output_dir))
            if name.startswith("checkpoint-")
        },
    }
    if vault is not None and callback is not None:
        vault.flush()
        result["restore"] = str(callback.last_restore) if callback.last_restore else None
        result["restored"] = callback.last_restore.restored if callback.last_restore else []
        result["snapshots"] = [
            {"name": info.name, "step": info.step, "epoch": info.epoch}
            for info in vault.snapshots()
        ]
        vault.close()
    with open(opts.out, "w", encoding="utf-8") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(sys.argv[1:])
