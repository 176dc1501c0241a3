"""Seeding: one seed for every global generator, per-worker streams, determinism flags.

- ``seed_everything(seed, deterministic=...)`` seeds Python ``random``, NumPy's legacy
  global state, torch's CPU generator and every CUDA device (torch seeds CUDA lazily, so
  this never initializes CUDA), and can switch torch to deterministic algorithms.
- ``seed_worker`` is a ``DataLoader(worker_init_fn=...)``: in each worker it seeds
  ``random`` and ``np.random`` from the worker's torch seed, as PyTorch's documentation
  recommends, and gives every generator registered with ``per_worker`` a stream of its own.
- ``per_worker(generator)`` registers a NumPy ``Generator`` or ``BitGenerator`` created in
  the parent: forked workers would otherwise all continue the parent's stream.

torch is optional: it is imported only if it is installed. docs/seeding.md has the details.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from types import ModuleType
from typing import Any, Literal, TypeVar

import numpy as np

from rngvault._errors import RngVaultWarning, StateError, warn
from rngvault.families import _torch

__all__ = ["ReproducibilityWarning", "per_worker", "seed_everything", "seed_worker"]

CUBLAS_WORKSPACE_CONFIG = ":4096:8"

Deterministic = bool | Literal["warn"]
G = TypeVar("G")


class ReproducibilityWarning(RngVaultWarning):
    """Something outside the generators' states can still make a run differ."""


# The PYTHONHASHSEED warning is about the process, not one call: it is given once.
_warned_hashseed = False


def _torch_if_installed() -> ModuleType | None:
    """torch, imported if it is installed and not yet imported; None if it is not installed."""
    torch = _torch.loaded()
    if torch is None and importlib.util.find_spec("torch") is not None:
        import torch
    return torch


def _check_seed(seed: Any) -> int:
    if isinstance(seed, np.integer):
        seed = int(seed)
    if type(seed) is not int or not 0 <= seed < 2**32:
        raise StateError(
            f"seed {seed!r} is not an integer in 0..2**32-1 (the range NumPy's legacy "
            "np.random.seed accepts)",
            field="seed",
            value=seed,
        )
    return seed


def seed_everything(seed: int, *, deterministic: Deterministic = False) -> tuple[str, ...]:
    """Seed every global generator with ``seed`` and return the names of those seeded.

    Seeds ``random`` (``python.global``), ``np.random`` (``numpy.global``) and, when torch
    is installed, torch's CPU generator (``torch.cpu``) and the generator of every CUDA
    device (``torch.cuda``, listed when CUDA is available; seeded lazily, without
    initializing CUDA). NumPy ``Generator``s and ``torch.Generator`` objects are not global:
    seed them where you create them.

    ``deterministic=True`` (or ``"warn"``) also sets ``torch.backends.cudnn.benchmark =
    False``, ``cudnn.deterministic = True``, ``torch.use_deterministic_algorithms(True,
    warn_only=deterministic == "warn")`` and, if unset, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``.
    ``False`` leaves those settings as they are.

    Warns (``ReproducibilityWarning``) when ``PYTHONHASHSEED`` is not set, when
    ``CUBLAS_WORKSPACE_CONFIG`` is set after CUDA was initialized, and when determinism is
    asked for without torch installed.
    """
    seed = _check_seed(seed)
    if deterministic not in (False, True, "warn"):
        raise StateError(
            f"deterministic must be False, True or 'warn', not {deterministic!r}",
            field="deterministic",
            value=deterministic,
        )
    random.seed(seed)
    np.random.seed(seed)
    seeded = ["python.global", "numpy.global"]
    torch = _torch_if_installed()
    if torch is not None:
        torch.manual_seed(seed)  # also seeds every CUDA device, lazily
        seeded.append("torch.cpu")
        if torch.cuda.is_available():
            seeded.append("torch.cuda")
        if deterministic:
            _make_deterministic(torch, warn_only=deterministic == "warn")
    elif deterministic:
        warn(
            f"seed_everything(deterministic={deterministic!r}): torch is not installed, so "
            "there are no torch algorithms to make deterministic; python and numpy were seeded",
            ReproducibilityWarning,
        )
    _warn_hashseed()
    _SEEDED.clear()
    _SEEDED.update(seed=seed, seeded=list(seeded), deterministic=deterministic)
    return tuple(seeded)


# What the last seed_everything of this process did, for run records (``recorded``).
_SEEDED: dict[str, Any] = {}


def recorded() -> dict[str, Any]:
    """The seeding of this process, as a run record keeps it: the last ``seed_everything``'s
    seed, the generators it seeded and its ``deterministic``, and the entropy of every
    ``per_worker`` generator's seed sequence (the base its worker streams derive from), as
    decimal text. Empty when nothing was seeded or registered."""
    found = dict(_SEEDED)
    workers = [str(seed_seq.entropy) for _b, seed_seq in list(_REGISTERED.values())]
    if workers:
        found["per_worker"] = workers
    return found


def _warn_hashseed() -> None:
    global _warned_hashseed
    if _warned_hashseed or os.environ.get("PYTHONHASHSEED", "random") != "random":
        return
    _warned_hashseed = True
    warn(
        "PYTHONHASHSEED is not set: hash() of str and bytes, and so the iteration order "
        "of sets, changes from run to run; start Python with PYTHONHASHSEED=0 (or any "
        "fixed number) in its environment (this warning is given once per process)",
        ReproducibilityWarning,
    )


def _make_deterministic(torch: Any, *, warn_only: bool) -> None:
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    if "CUBLAS_WORKSPACE_CONFIG" in os.environ:
        return  # the user's choice stands
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    if torch.cuda.is_initialized():
        warn(
            f"CUBLAS_WORKSPACE_CONFIG was set to {CUBLAS_WORKSPACE_CONFIG} after CUDA was "
            "initialized; cuBLAS reads it when it creates its workspace, so it has no effect "
            "on work already done: call seed_everything before any CUDA work, or set "
            "CUBLAS_WORKSPACE_CONFIG in the environment",
            ReproducibilityWarning,
        )


# -- DataLoader workers ----------------------------------------------------------------------

# id(bit generator) -> (bit generator, the seed sequence its worker streams derive from).
# Strong references: a registered generator lives as long as the process.
_REGISTERED: dict[int, tuple[np.random.BitGenerator, np.random.SeedSequence]] = {}
# The registered generators already given their worker stream, and in which process.
_RESEEDED: dict[int, set[int]] = {}


def _worker_seed() -> int | None:
    """torch's seed in this DataLoader worker (``base_seed + worker_id``); None outside one."""
    data = sys.modules.get("torch.utils.data")
    if data is None or data.get_worker_info() is None:
        return None
    return int(_torch.require("seeding DataLoader workers").initial_seed())


def worker_seed_sequence(seed_seq: np.random.SeedSequence, worker_seed: int) -> Any:
    """The seed sequence of a registered generator's stream in the worker with ``worker_seed``:
    the generator's own, with the worker seed appended to its spawn key."""
    return np.random.SeedSequence(
        seed_seq.entropy,
        spawn_key=(*seed_seq.spawn_key, worker_seed),
        pool_size=seed_seq.pool_size,
    )


def _reseed(bit_generator: np.random.BitGenerator, seed_seq: Any, worker_seed: int) -> None:
    done = _RESEEDED.setdefault(os.getpid(), set())
    if id(bit_generator) in done:
        return
    child = worker_seed_sequence(seed_seq, worker_seed)
    fresh = type(bit_generator)(child)
    # __setstate__ is the public door that sets the seed sequence too, so that spawn() in
    # the worker derives from the worker's stream.
    bit_generator.__setstate__((fresh.state, child))  # type: ignore[attr-defined]
    done.add(id(bit_generator))


def per_worker(generator: G) -> G:
    """Register a NumPy ``Generator`` or ``BitGenerator`` for a stream of its own per worker.

    Returns ``generator``. In each DataLoader worker, ``seed_worker`` restarts it from its
    seed sequence with the worker's torch seed appended to the spawn key, so workers draw
    distinct streams, and the same streams again whenever the DataLoader's generator is
    in the same state. The parent's generator is not touched. Workers started by fork
    inherit the registration; with the "spawn" or "forkserver" start methods, call
    ``per_worker`` in the worker (for instance in the dataset's ``__setstate__``): called
    inside a worker, it gives the generator its worker stream at once.
    """
    bit_generator = getattr(generator, "bit_generator", generator)
    if not isinstance(bit_generator, np.random.BitGenerator):
        raise StateError(
            f"per_worker takes a numpy Generator or BitGenerator, not a "
            f"{type(generator).__module__}.{type(generator).__qualname__}",
            field="generator",
        )
    seed_seq = bit_generator.seed_seq
    if not isinstance(seed_seq, np.random.SeedSequence):
        raise StateError(
            f"this {type(bit_generator).__name__} has no SeedSequence to derive worker "
            "streams from; create it from a seed (np.random.default_rng(seed))",
            field="seed_seq",
        )
    if id(bit_generator) not in _REGISTERED:
        _REGISTERED[id(bit_generator)] = (bit_generator, seed_seq)
        worker_seed = _worker_seed()
        if worker_seed is not None:
            _reseed(bit_generator, seed_seq, worker_seed)
    return generator


def seed_worker(worker_id: int) -> int:
    """``DataLoader(worker_init_fn=rngvault.seed_worker)``: seed this worker's generators.

    Seeds ``random`` and ``np.random`` with ``torch.initial_seed() % 2**32`` (the worker's
    torch seed, ``base_seed + worker_id``, folded to NumPy's range) and gives every
    generator registered with ``per_worker`` its worker stream (only inside a DataLoader
    worker: the parent's generators are never touched). Returns the 32-bit seed.
    """
    torch = _torch.require("seeding DataLoader workers")
    seed = int(torch.initial_seed()) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    worker_seed = _worker_seed()
    if worker_seed is not None:
        for bit_generator, seed_seq in list(_REGISTERED.values()):
            _reseed(bit_generator, seed_seq, worker_seed)
    return seed
