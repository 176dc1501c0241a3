"""A small training loop for tests/families/test_dataloader_resume.py, run in its own process.

    python dataloader_resume_job.py full STORE         three whole epochs
    python dataloader_resume_job.py snap STORE         epoch 0, then 7 batches of epoch 1 and a
                                                       snapshot "e1b7"; stops there
    python dataloader_resume_job.py resume STORE       a fresh process: restore "e1b7", then
                                                       the rest of epoch 1 and epoch 2

Each prints one JSON line: per epoch, per batch, the items (index, the seed of the worker
that loaded it) and a draw from the global torch generator made after the batch (as dropout
would), so both the order, the worker seeds and the global stream are compared.
"""

from __future__ import annotations

import json
import sys

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

import rngvault


class Items(Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> tuple[int, int]:
        info = get_worker_info()
        return index, -1 if info is None else info.seed


def make_loader(seed: int) -> DataLoader:
    return DataLoader(
        Items(),
        batch_size=3,
        shuffle=True,
        num_workers=2,
        generator=torch.Generator().manual_seed(seed),
    )


def main(mode: str, store: str) -> None:
    torch.manual_seed(1234 if mode != "resume" else 999)
    vault = rngvault.Vault(store, run="tests/resume", rank=0, world_size=1)
    loader = vault.track(make_loader(7 if mode != "resume" else 8), "loader")
    first = 0
    if mode == "resume":
        snapshot = vault.get("e1b7")
        vault.restore(snapshot.ref)
        first = snapshot.metadata.epoch
    out: dict[int, list] = {}
    for epoch in range(first, 3):
        batches = out.setdefault(epoch, [])
        for index, seed in loader:
            batches.append([index.tolist(), seed.tolist(), torch.rand(()).item()])
            if mode == "snap" and epoch == 1 and len(batches) == 7:
                vault.snapshot("e1b7", epoch=1, step=len(out[0]) + 7, durable=True)
                vault.close()
                print(json.dumps(out))
                return
    vault.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
