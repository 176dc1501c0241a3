"""A tiny accelerate training run on CPU, run in a fresh interpreter by test_accelerate.py.

    python accelerate_train.py MODE STORE CHECKPOINT [--no-loader-generator]

MODE is one of:
  plain             train 3 epochs from the start, without rngvault
  save              with rngvault: train 1 epoch, save_state(CHECKPOINT), stop
  save-continue     with rngvault: train 3 epochs, save_state(CHECKPOINT) after the first
  resume            with rngvault: load_state(CHECKPOINT), train epochs 2 and 3
  resume-untracked  without rngvault: load_state(CHECKPOINT), train epochs 2 and 3

Prints one JSON object: per epoch trained, the losses (``float.hex``, so equal means
bit-identical) and the order of the samples; with rngvault, what the restore restored.
Under several processes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set), each prints its own.

The run draws from a dropout layer (torch's global generator), a shuffled DataLoader with a
``torch.Generator`` of its own (with --no-loader-generator: none, and under several processes
accelerate makes one), and a NumPy ``Generator`` for input noise: accelerate's own checkpoint
holds only the first.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset

import rngvault
from rngvault.integrations.accelerate import track

RUN = "tests/accelerate"


def main(mode: str, store: str, checkpoint: str, *flags: str) -> None:
    set_seed(0)
    data = torch.Generator().manual_seed(123)
    inputs = torch.randn(48, 8, generator=data)
    targets = torch.randn(48, 1, generator=data)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = DataLoader(
        TensorDataset(inputs, targets, torch.arange(len(inputs))),
        batch_size=8,
        shuffle=True,
        generator=None if "--no-loader-generator" in flags else torch.Generator().manual_seed(1),
    )
    augment = np.random.default_rng(7)

    accelerator = Accelerator(cpu=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    tracked = mode in ("save", "save-continue", "resume")
    vault = None
    tracker = None
    if tracked:
        vault = rngvault.Vault(store, run=RUN)
        vault.track(augment, "augment")
        tracker = track(accelerator, vault)

    first = 0
    if mode in ("resume", "resume-untracked"):
        accelerator.load_state(checkpoint)
        first = 1
    last = 1 if mode == "save" else 3

    losses, orders = [], []
    for epoch in range(first, last):
        epoch_losses, order = [], []
        for x, y, index in loader:
            order += index.tolist()
            noise = torch.from_numpy(augment.normal(0.0, 0.1, size=tuple(x.shape))).float()
            loss = torch.nn.functional.mse_loss(model(x + noise), y)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            epoch_losses.append(float(loss.item()).hex())
        losses.append(epoch_losses)
        orders.append(order)
        if epoch == 0 and mode in ("save", "save-continue"):
            accelerator.save_state(checkpoint)

    result: dict[str, object] = {"losses": losses, "orders": orders}
    if tracker is not None and tracker.saved is not None:
        result["saved"] = str(tracker.saved)
    if tracker is not None and tracker.report is not None:
        result["restored"] = tracker.report.restored
    if vault is not None:
        vault.close()
    # Leave the process group before exiting: gloo's threads torn down at exit while still
    # joined can abort the process ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()
    print(json.dumps(result), flush=True)
    # Everything is stored and the process group is gone: leave without the interpreter's
    # teardown, where torch.distributed's threads and TCP store now and then hang the exit
    # of a process that has already printed its result (a test saw rank 0 wait 120 s).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
