"""The worked example of docs/seeds.md: how much the seed alone moves a small model's accuracy.

    .venv/bin/python scripts/seeds_example.py [--seeds 40] [--store DIR] [--plot FILE.png]

Trains a two-layer MLP (dropout, shuffled mini-batches) on a fixed synthetic two-class task
(two interleaved spirals, the data drawn once from a fixed seed), once per seed for each of
three configs (32 hidden units with learning rates 0.05 and 0.1, and 16 hidden units with
0.1), with ``rngvault.sweep_seeds``: each seed seeds every global generator, so it changes
only the initial weights, the dropout masks and the batch order. Each run records its seed
and config and stores the held-out accuracy as the metric of its snapshot ``final``. Prints
the seed sensitivity report over the three sweeps (three groups, split by ``hidden`` and
``lr``), and writes its plot with --plot (which needs ``rngvault[plot]``). With --store, a
second call reuses the runs already there.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from typing import Any

import numpy as np
import torch

import rngvault

CONFIG = {"hidden": 32, "dropout": 0.2, "lr": 0.05, "epochs": 30, "batch": 32}
VARIANTS = ({"lr": 0.05}, {"lr": 0.1}, {"hidden": 16, "lr": 0.1})


def spirals(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved noisy spirals, ``count`` points each, from their own generator."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.25, 3.0 * math.pi, size=count)
    points = []
    labels = []
    for label, turn in ((0, 0.0), (1, math.pi)):
        x = t * np.cos(t + turn) + rng.normal(0, 0.35, size=count)
        y = t * np.sin(t + turn) + rng.normal(0, 0.35, size=count)
        points.append(np.stack([x, y], axis=1) / 5.0)
        labels.append(np.full(count, label))
    return (
        torch.tensor(np.concatenate(points), dtype=torch.float32),
        torch.tensor(np.concatenate(labels), dtype=torch.long),
    )


TRAIN = spirals(200, seed=1000)
TEST = spirals(500, seed=2000)


def train(seed: int, vault: rngvault.Vault) -> dict[str, Any]:
    """One run: everything random comes from the global generators the sweep seeded; the
    settings are the run's recorded config."""
    config = vault.config or {}
    model = torch.nn.Sequential(
        torch.nn.Linear(2, config["hidden"]),
        torch.nn.ReLU(),
        torch.nn.Dropout(config["dropout"]),
        torch.nn.Linear(config["hidden"], config["hidden"]),
        torch.nn.ReLU(),
        torch.nn.Linear(config["hidden"], 2),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    inputs, labels = TRAIN
    for _epoch in range(config["epochs"]):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), config["batch"]):
            batch = order[start : start + config["batch"]]
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(TEST[0]).argmax(1) == TEST[1]).float().mean().item()
    return {"accuracy": round(100.0 * accuracy, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--store", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        for variant in VARIANTS:
            config = {**CONFIG, **variant}
            rngvault.sweep_seeds(
                train,
                range(args.seeds),
                run=f"example/spirals-h{config['hidden']}-lr{config['lr']}-{{seed}}",
                store=args.store or scratch,
                config=config,
            )
        report = rngvault.seed_sensitivity(
            args.store or scratch, "example/spirals-*", metric="accuracy"
        )
        print(report)
        runs = args.seeds * len(VARIANTS)
        print(f"\n{runs} runs in {time.perf_counter() - started:.1f} s")
        if args.plot:
            print(f"plot: {rngvault.plot_seeds(report, args.plot)}")


if __name__ == "__main__":
    main()
