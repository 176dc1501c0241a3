"""Benchmark: what rngvault's integrations cost a small CPU training run.

    .venv/bin/python scripts/bench_integrations.py [--repeat 5] [--epochs 3]
        [--frameworks plain,lightning,transformers,accelerate]

For each framework, the same small training run (an MLP with dropout on 16,384 synthetic
samples, batches of 32, one torch thread) without rngvault, with a snapshot per epoch,
and with a snapshot per optimizer step, the three interleaved run by run (each goes
first, second and third in turn). Each run's wall
time includes closing the Vault (waiting for its writer). Prints the median of each mode
and the ratio to the run without rngvault; for per-step snapshots also the added time per
step, against the median step; and that one snapshot's cost as a share of an epoch (what a
snapshot per epoch costs, measured more finely than the per-epoch ratio, which is within
the run-to-run noise of a shared machine).

Frameworks: ``plain`` (a PyTorch loop calling ``vault.snapshot``), ``lightning``
(``RngVaultCallback``), ``transformers`` (``RngVaultTrainerCallback``), ``accelerate``
(``track`` with ``save_state`` at each epoch's end in every mode; per-step snapshots by
``vault.snapshot`` in the loop).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import rngvault

SAMPLES, FEATURES, CLASSES, BATCH = 16384, 32, 10, 32
STEPS_PER_EPOCH = SAMPLES // BATCH
MODES = ("none", "epoch", "step")


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, FEATURES, generator=g)
    return x, (x[:, :CLASSES].argmax(1))


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 256),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(256, CLASSES),
    )


@contextlib.contextmanager
def vault_for(mode: str, root: Path, tag: str) -> Iterator[rngvault.Vault | None]:
    if mode == "none":
        yield None
        return
    vault = rngvault.Vault(root / "store", run=f"bench/{tag}-{time.monotonic_ns()}")
    try:
        yield vault
    finally:
        vault.close()


def loader(vault: rngvault.Vault | None) -> DataLoader:
    x, y = data()
    out = DataLoader(
        TensorDataset(x, y),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    if vault is not None:
        vault.track(out, "loader")
    return out


def run_plain(mode: str, epochs: int, root: Path) -> None:
    with vault_for(mode, root, "plain") as vault:
        torch.manual_seed(0)
        model, batches = mlp(), loader(vault)
        augment = np.random.default_rng(2)
        if vault is not None:
            vault.track(augment, "augment")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        step = 0
        for epoch in range(epochs):
            for x, y in batches:
                x = x + torch.from_numpy(augment.normal(0, 0.01, x.shape).astype(np.float32))
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                if vault is not None and mode == "step":
                    vault.snapshot(f"step{step}", step=step, epoch=epoch)
            if vault is not None and mode == "epoch":
                vault.snapshot(f"epoch{epoch}", step=step, epoch=epoch)


def run_lightning(mode: str, epochs: int, root: Path) -> None:
    import lightning.pytorch as pl

    from rngvault.integrations.lightning import RngVaultCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def training_step(self, batch: Any, _index: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    with vault_for(mode, root, "lightning") as vault:
        torch.manual_seed(0)
        callbacks = []
        if vault is not None:
            every = {
                "epoch": {"every_n_epochs": 1},
                "step": {"every_n_epochs": None, "every_n_steps": 1},
            }[mode]
            callbacks.append(RngVaultCallback(vault, **every))
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        trainer.fit(Module(), loader(vault))


class DictData(Dataset):
    def __init__(self) -> None:
        self.x, self.y = data()

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "labels": self.y[index]}


def run_transformers(mode: str, epochs: int, root: Path) -> None:
    import transformers

    from rngvault.integrations.transformers import RngVaultTrainerCallback

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": torch.nn.functional.cross_entropy(self.net(x), labels)}

    with vault_for(mode, root, "transformers") as vault:
        callbacks = []
        if vault is not None:
            every = {
                "epoch": {"every_n_epochs": 1},
                "step": {"every_n_epochs": None, "every_n_steps": 1},
            }[mode]
            callbacks.append(RngVaultTrainerCallback(vault, **every))
        args = transformers.TrainingArguments(
            output_dir=str(root / "hf"),
            num_train_epochs=epochs,
            per_device_train_batch_size=BATCH,
            learning_rate=0.05,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            logging_strategy="no",
            seed=0,
        )
        trainer = transformers.Trainer(
            model=Model(), args=args, train_dataset=DictData(), callbacks=callbacks
        )
        trainer.train()


def run_accelerate(mode: str, epochs: int, root: Path) -> None:
    from accelerate import Accelerator

    from rngvault.integrations.accelerate import track

    with vault_for(mode, root, "accelerate") as vault:
        torch.manual_seed(0)
        accelerator = Accelerator(cpu=True)
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = data()
        batches = DataLoader(
            TensorDataset(x, y),
            batch_size=BATCH,
            shuffle=True,
            generator=torch.Generator().manual_seed(1),
        )
        model, optimizer, batches = accelerator.prepare(model, optimizer, batches)
        if vault is not None:
            track(accelerator, vault)
        step = 0
        for epoch in range(epochs):
            for xb, yb in batches:
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                optimizer.zero_grad()
                accelerator.backward(loss)
                optimizer.step()
                step += 1
                if vault is not None and mode == "step":
                    vault.snapshot(f"step{step}", step=step, epoch=epoch)
            accelerator.save_state(str(root / "acc" / f"e{epoch}"))


RUNNERS: dict[str, Callable[[str, int, Path], None]] = {
    "plain": run_plain,
    "lightning": run_lightning,
    "transformers": run_transformers,
    "accelerate": run_accelerate,
}


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """The frameworks' banners and tips off the table (they print, not only log)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--frameworks", default=",".join(RUNNERS))
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(1)
    chosen = [name.strip() for name in args.frameworks.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RUNNERS]
    if unknown:
        sys.exit(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(RUNNERS)}")
    steps = args.epochs * STEPS_PER_EPOCH
    print(
        f"{args.epochs} epochs x {STEPS_PER_EPOCH} steps, {args.repeat} interleaved runs per "
        f"mode; torch {torch.__version__}, one torch thread"
    )
    print(
        f"{'framework':<13} {'no vault s':>10} {'per epoch':>10} {'ratio':>6} "
        f"{'per step':>9} {'ratio':>6} {'step ms':>8} {'+ms/step':>9} {'1 snap/epoch':>12}"
    )
    for name in chosen:
        runner = RUNNERS[name]
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            with quiet_output():
                runner("none", 1, root)  # warm-up: imports, first-call costs
            for rep in range(args.repeat):
                # each mode goes first, second and third in turn: no place in the order
                # (after another mode's garbage, say) favours one of them
                for mode in MODES[rep % 3 :] + MODES[: rep % 3]:
                    with quiet_output():
                        started = time.perf_counter()
                        runner(mode, args.epochs, root)
                        times[mode].append(time.perf_counter() - started)
        med = {mode: statistics.median(values) for mode, values in times.items()}
        step_ms = med["none"] / steps * 1000
        added = (med["step"] - med["none"]) / steps * 1000
        # One snapshot's cost (what per-step snapshots add per step) against an epoch: the
        # per-epoch ratio itself is within the machine's run-to-run noise.
        per_epoch = added / (step_ms * STEPS_PER_EPOCH)
        print(
            f"{name:<13} {med['none']:>10.2f} {med['epoch']:>10.2f} "
            f"{med['epoch'] / med['none']:>6.3f} {med['step']:>9.2f} "
            f"{med['step'] / med['none']:>6.3f} {step_ms:>8.2f} {added:>9.3f} "
            f"{per_epoch:>11.2%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
