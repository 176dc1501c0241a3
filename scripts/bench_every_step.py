"""Benchmark: a snapshot at every step of a CPU training loop whose step takes about 20 ms.

    .venv/bin/python scripts/bench_every_step.py [--steps 300] [--repeat 7] [--width 1664]
        [--store local|server] [--bytes-steps 10000] [--breakdown]

The loop: an MLP with dropout (one torch thread), a DataLoader with 2 workers over a
map-style synthetic dataset, shuffled with its own torch.Generator, and NumPy augmentation
drawn each step from a PCG64 ``np.random.default_rng``. It runs without a Vault and with a
Vault that takes a snapshot after every optimizer step (into a local directory store in a
temporary directory, or with ``--store server`` into a ``rngvault serve`` started on a
loopback port over a SQLite database in a temporary directory) with the process-wide
generators (python, NumPy legacy, torch CPU), the augmentation Generator (``augment``) and
the loader (``loader``) tracked. The two runs
alternate (each goes first in turn), after one short warm-up of each; a run's wall time
includes creating and closing the Vault (waiting for its writer) and starting the loader's
workers.

Prints medians: each mode's wall time, their ratio, the time added per step; the time one
``snapshot()`` call blocks the training thread (measured around the call); the background
writer's CPU per snapshot, two ways: the process CPU time of the Vault run minus that of the
run without one, divided by the snapshots (training thread and writer together; the loader
workers are other processes and not counted), and the writer thread's own CPU time
(``time.thread_time()`` around each job, taken inside the writer thread by wrapping its job
handlers, single and batched, divided by the snapshots they handled); and the store's size
after ``close()`` divided by the steps of the run (the server's database files, with
``--store server``).

``--bytes-steps N`` adds one more Vault run of N steps, not part of the medians, for the
store's bytes per step over a long run (the first snapshot's states, kept whole, weigh less
the longer the run).

``--breakdown`` adds one more Vault run, not part of the medians, that times the writer's
parts per snapshot (environment, probes, encode, the store's put and, inside the local
store's, the delta encoding of states, the compression of records and the fsyncs) by
wrapping those functions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import rngvault
import rngvault._delta
import rngvault._environment
import rngvault._probes
import rngvault._vault
import rngvault.stores._pack
import rngvault.stores.http
import rngvault.stores.local

SAMPLES, FEATURES, CLASSES, BATCH, WORKERS = 32768, 128, 10, 64, 2


class Synthetic(Dataset):
    """A map-style dataset of fixed random samples (the same in every run)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(SAMPLES, FEATURES, generator=g)
        self.y = self.x[:, :CLASSES].argmax(1)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def mlp(width: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, width),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(width, CLASSES),
    )


@dataclass
class Run:
    mode: str
    wall: float = 0.0
    cpu: float = 0.0  # process CPU time (this process's threads only)
    snapshots: int = 0
    blocking: list[float] = field(default_factory=list)  # seconds per snapshot() call
    writer_cpu: list[float] = field(default_factory=list)  # writer thread CPU per job
    store_bytes: int = 0  # sum of file sizes
    store_allocated: int = 0  # blocks allocated to files and directories
    store_files: int = 0


def measure_store(root: Path, run: Run) -> None:
    run.store_bytes = run.store_allocated = run.store_files = 0
    for directory, _dirs, files in os.walk(root):
        run.store_allocated += os.stat(directory).st_blocks * 512
        for name in files:
            st = os.stat(os.path.join(directory, name))
            run.store_bytes += st.st_size
            run.store_allocated += st.st_blocks * 512
            run.store_files += 1


def time_writer_jobs(vault: rngvault.Vault, into: list[float]) -> None:
    """Record the writer thread's CPU time per snapshot (measured inside that thread; a
    batch's time is shared by its snapshots)."""
    writer = vault._writer
    handle, handle_many = writer._handle, writer._handle_many
    assert handle_many is not None

    def timed(payload: Any) -> Any:
        start = time.thread_time()
        try:
            return handle(payload)
        finally:
            into.append(time.thread_time() - start)

    def timed_many(payloads: list[Any]) -> Any:
        start = time.thread_time()
        try:
            return handle_many(payloads)
        finally:
            into.extend([(time.thread_time() - start) / len(payloads)] * len(payloads))

    writer._handle, writer._handle_many = timed, timed_many


class Server:
    """``rngvault serve`` on a loopback port over a SQLite database in ``directory``."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "rngvault", "serve", "--port", str(self.port)]
        argv += ["--db", f"sqlite:///{directory / 'store.db'}"]
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, "RNGVAULT_HOME": str(directory)},  # no tokens: open on loopback
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("rngvault serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def train(
    mode: str,
    steps: int,
    width: int,
    dataset: Synthetic,
    root: Path,
    tag: str,
    server: Server | None = None,
) -> Run:
    run = Run(mode)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = mlp(width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    store = root / f"store-{tag}"
    t0, c0 = time.perf_counter(), time.process_time()
    vault = None
    if mode == "vault":
        where = server.url if server is not None else rngvault.LocalStore(store)
        vault = rngvault.Vault(where, run=f"bench/every-step-{tag}")
        time_writer_jobs(vault, run.writer_cpu)
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=WORKERS,
        generator=torch.Generator().manual_seed(1),
    )
    augment = np.random.default_rng(2)
    if vault is not None:
        vault.track(loader, "loader")
        vault.track(augment, "augment")
    step, epoch = 0, 0
    while step < steps:
        for x, y in loader:
            x = x + torch.from_numpy(augment.normal(0.0, 0.01, x.shape).astype(np.float32))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if vault is not None:
                b0 = time.perf_counter()
                vault.snapshot(f"step-{step}", step=step, epoch=epoch)
                run.blocking.append(time.perf_counter() - b0)
            if step == steps:
                break
        epoch += 1
    if vault is not None:
        vault.close()
        run.snapshots = step
    run.wall, run.cpu = time.perf_counter() - t0, time.process_time() - c0
    if vault is not None:
        measure_store(server.directory if server is not None else store, run)
    return run


# -- the writer's parts ---------------------------------------------------------------------


class Parts:
    """CPU and wall time of wrapped functions, summed per name, on the writer thread."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - c0
                self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0

        return timed


PARTS = (
    ("environment", "  _environment.collect"),
    ("probes", "  _probes.compute (states that changed)"),
    ("encode", "  encode_with_digest"),
    ("put", "  the store's put_many, of which:"),
    ("payload", "    a pack record's map (split, states' deltas)"),
    ("delta", "      Chain.encode (the states' deltas)"),
    ("compress", "    DEFLATE of records and deltas"),
    ("fsync", "    fsync of the pack"),
)


@contextlib.contextmanager
def instrumented(parts: Parts, server: bool) -> Iterator[None]:
    pack, delta = rngvault.stores._pack, rngvault._delta
    store = rngvault.stores.http.HttpStore if server else rngvault.stores.local.LocalStore
    with contextlib.ExitStack() as stack:
        for target, attr, name in (
            (rngvault._environment, "collect", "environment"),
            (rngvault._probes, "compute", "probes"),
            (rngvault._vault, "encode_with_digest", "encode"),
            (store, "put_many", "put"),
            (pack.Pack, "_payload", "payload"),
            (delta.Chain, "encode", "delta"),
            (delta, "compress", "compress"),
            (pack.Pack, "_sync_fd", "fsync"),
        ):
            stack.enter_context(
                mock.patch.object(target, attr, parts.wrap(name, getattr(target, attr)))
            )
        yield


def breakdown(
    steps: int, width: int, dataset: Synthetic, root: Path, server: Server | None
) -> None:
    parts = Parts()
    with instrumented(parts, server is not None):
        run = train("vault", steps, width, dataset, root, "breakdown", server)
    n = run.snapshots
    total = sum(run.writer_cpu)
    print(f"\nwriter's parts per snapshot (one more instrumented Vault run of {n} steps):")
    print(f"  {'part':52} {'CPU ms':>8} {'wall ms':>8}")
    print(f"  {'writer job, all':52} {total / n * 1e3:8.3f} {'':>8}")
    for key, label in PARTS:
        cpu, wall = parts.cpu.get(key, 0.0), parts.wall.get(key, 0.0)
        print(f"  {label:52} {cpu / n * 1e3:8.3f} {wall / n * 1e3:8.3f}")
    direct = sum(parts.cpu.get(k, 0.0) for k in ("environment", "probes", "encode", "put"))
    rest = "  rest of the job (snapshot copies, refs, queue)"
    print(f"  {rest:52} {(total - direct) / n * 1e3:8.3f}")


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per run (default 300)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each mode (default 7)")
    parser.add_argument("--width", type=int, default=1664, help="hidden width (default 1664)")
    parser.add_argument("--breakdown", action="store_true", help="time the writer's parts")
    parser.add_argument(
        "--store", choices=("local", "server"), default="local", help="where the Vault stores"
    )
    parser.add_argument(
        "--bytes-steps", type=int, default=0, help="one more run of N steps for bytes per step"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = Synthetic()
    runs: dict[str, list[Run]] = {"none": [], "vault": []}
    with tempfile.TemporaryDirectory(prefix="bench-every-step-") as tmp:
        root = Path(tmp)
        servers: list[Server] = []

        def server(tag: str) -> Server | None:
            if args.store != "server":
                return None
            servers.append(Server(root / f"server-{tag}"))  # a fresh database each run
            return servers[-1]

        try:
            for mode in ("none", "vault"):  # warm-up: imports, thread pools, first workers
                train(mode, min(args.steps, 20), args.width, dataset, root, f"warm-{mode}", None)
            for r in range(args.repeat):
                order = ("none", "vault") if r % 2 == 0 else ("vault", "none")
                for mode in order:
                    where = server(str(r)) if mode == "vault" else None
                    runs[mode].append(
                        train(mode, args.steps, args.width, dataset, root, str(r), where)
                    )
            report(runs, args)
            if args.bytes_steps:
                long = train(
                    "vault", args.bytes_steps, args.width, dataset, root, "long", server("long")
                )
                line(
                    f"store bytes per step, {args.bytes_steps} steps",
                    f"{long.store_bytes / args.bytes_steps:.0f}",
                    f"{long.store_bytes} B in {long.store_files} files; allocated "
                    f"{long.store_allocated / args.bytes_steps:.0f} per step",
                )
            if args.breakdown:
                breakdown(args.steps, args.width, dataset, root, server("breakdown"))
        finally:
            for each in servers:
                each.stop()


def line(label: str, value: str, note: str = "") -> None:
    print(f"{label:38} {value:>9}   {note}".rstrip())


def report(runs: dict[str, list[Run]], args: argparse.Namespace) -> None:
    none, vault = runs["none"], runs["vault"]
    med = statistics.median
    steps = args.steps
    wall_none, wall_vault = med(r.wall for r in none), med(r.wall for r in vault)
    pairs = [v.wall / n.wall for n, v in zip(none, vault, strict=True)]
    cpu_none, cpu_vault = med(r.cpu for r in none), med(r.cpu for r in vault)
    blocking = [b for r in vault for b in r.blocking]
    writer = [c for r in vault for c in r.writer_cpu]
    size, allocated, files = (
        med(getattr(r, a) for r in vault) for a in ("store_bytes", "store_allocated", "store_files")
    )
    print(
        f"\n{steps} steps a run, {args.repeat} runs of each mode, interleaved; width "
        f"{args.width}, batch {BATCH}, {WORKERS} loader workers, torch {torch.__version__} "
        f"with {torch.get_num_threads()} thread, rngvault {rngvault.__version__}, "
        f"{'a local store' if args.store == 'local' else 'rngvault serve (SQLite)'}"
    )
    line("wall, no Vault (median s)", f"{wall_none:.3f}", f"runs: {fmt(r.wall for r in none)}")
    line(
        "wall, Vault every step (median s)",
        f"{wall_vault:.3f}",
        f"runs: {fmt(r.wall for r in vault)}",
    )
    line("ratio of medians", f"{wall_vault / wall_none:.4f}")
    line("median of paired ratios", f"{med(pairs):.4f}", f"pairs: {fmt(pairs, 4)}")
    line("step without a Vault (ms)", f"{wall_none / steps * 1e3:.2f}", "median run wall / steps")
    line("added per step (ms)", f"{(wall_vault - wall_none) / steps * 1e3:.3f}")
    line(
        "snapshot() blocking per call (ms)",
        f"{med(blocking) * 1e3:.3f}",
        f"median; p90 {quantile(blocking, 0.9) * 1e3:.3f}, p99 "
        f"{quantile(blocking, 0.99) * 1e3:.3f}, max {max(blocking) * 1e3:.3f}",
    )
    line(
        "process CPU per snapshot (ms)",
        f"{(cpu_vault - cpu_none) / steps * 1e3:.3f}",
        f"median process CPU of Vault runs {cpu_vault:.3f} s minus no-Vault runs "
        f"{cpu_none:.3f} s, / {steps} snapshots",
    )
    line(
        "writer thread CPU per snapshot (ms)",
        f"{med(writer) * 1e3:.3f}",
        f"median; mean {statistics.fmean(writer) * 1e3:.3f}; thread_time() in the writer thread",
    )
    line(
        "store bytes per step",
        f"{size / steps:.0f}",
        f"file sizes: {int(size)} B in {int(files)} files after close, a run of {steps} steps",
    )
    line(
        "store allocated per step", f"{allocated / steps:.0f}", "disk blocks, files and directories"
    )


def fmt(values: Any, digits: int = 3) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


if __name__ == "__main__":
    main()
