"""A small training run used by the end-to-end tests (run as a script, in a fresh process).

    python tests/e2e/train.py STORE MODE OUT [CHECKPOINTS]

MODE "train" trains 4 epochs from scratch as run alice/e2e, saving model and optimizer at the
start of each epoch (into CHECKPOINTS) next to a Vault snapshot. MODE "resume" loads the
epoch-2 checkpoint, restores alice's epoch-2 snapshot into run bob/resume (with alice/e2e as
reference) and trains epochs 2 and 3. The per-batch losses go to OUT as JSON.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import rngvault


class Noisy(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """y = 3x + 1 with noise drawn from python, numpy legacy and a per-worker Generator."""

    def __init__(self, augment: np.random.Generator) -> None:
        self.x = torch.linspace(-1, 1, 48).unsqueeze(1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.01 * (self.augment.normal() + random.random() + np.random.rand())
        x = self.x[i] + float(noise)
        return x, 3 * x + 1


def main() -> None:
    store, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
    checkpoints = Path(sys.argv[4] if len(sys.argv) > 4 else store)
    rngvault.seed_everything(1234)
    run, reference = ("alice/e2e", None) if mode == "train" else ("bob/resume", "alice/e2e")
    vault = rngvault.Vault(store, run=run, reference=reference, on_error="raise")
    augment = vault.track(rngvault.per_worker(np.random.default_rng(5)), "augment")
    batch_noise = vault.track(np.random.default_rng(9), "batch-noise")
    loader = vault.track(
        DataLoader(
            Noisy(augment),
            batch_size=8,
            shuffle=True,
            num_workers=2,
            worker_init_fn=rngvault.seed_worker,
            generator=torch.Generator(),
        ),
        "loader",
    )
    model = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    start = 0
    if mode == "resume":
        start = 2
        saved = torch.load(checkpoints / "epoch2.pt")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        report = vault.restore("epoch2", run="alice/e2e")
        assert report.ok, str(report)

    losses: dict[int, list[float]] = {}
    for epoch in range(start, 4):
        if mode == "train":
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save(state, checkpoints / f"epoch{epoch}.pt")
        vault.snapshot(f"epoch{epoch}", epoch=epoch)
        model.train()
        losses[epoch] = []
        for x, y in loader:
            y = y + 0.01 * torch.from_numpy(batch_noise.normal(size=tuple(y.shape))).float()
            loss = ((model(x) - y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[epoch].append(loss.item())
    vault.flush()
    divergence = None if vault.divergence is None else str(vault.divergence)
    Path(out).write_text(json.dumps({"losses": losses, "divergence": divergence}))


if __name__ == "__main__":
    main()
