"""Ranks in distributed training: which process this is, and states for ranks that were not
recorded (``remap="spawn"``)."""

from __future__ import annotations

import os

import numpy as np

from rngvault._errors import RngVaultError
from rngvault._snapshot import Snapshot, State
from rngvault.families import _torch, get_family


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise RngVaultError(f"environment variable {name}={value!r} is not an integer") from None


def detect(rank: int | None = None, world_size: int | None = None) -> tuple[int, int, int | None]:
    """(rank, world size, local rank): from torch.distributed when initialized, else RANK /
    WORLD_SIZE / LOCAL_RANK, else 0 / 1 / None; explicit arguments win."""
    for what, value in (("rank", rank), ("world_size", world_size)):
        if value is not None and (type(value) is not int):
            raise RngVaultError(f"{what} must be an int, not {type(value).__name__} {value!r}")
    found_rank, found_size = None, None
    torch = _torch.loaded()
    if torch is not None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            found_rank, found_size = dist.get_rank(), dist.get_world_size()
    if found_rank is None:
        found_rank, found_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    rank = rank if rank is not None else (found_rank or 0)
    world_size = world_size if world_size is not None else (found_size or max(1, rank + 1))
    if not 0 <= rank < world_size:
        raise RngVaultError(f"rank {rank} is outside 0..{world_size - 1} (world size {world_size})")
    return rank, world_size, _env_int("LOCAL_RANK")


def _derive(state: State, seq: np.random.SeedSequence) -> State:
    """A fresh state of the same family and kind, seeded from ``seq``."""
    family = get_family(state.family)
    if family is None:
        raise RngVaultError(f"cannot derive a state of the unknown family {state.family!r}")
    return State(state.family, family.derive(state.fields, seq))


def derive_states(snapshot: Snapshot, rank: int) -> dict[str, State]:
    """States for a rank the snapshot has no entry for, derived deterministically from the
    snapshot's digest: SeedSequence(digest).spawn(...) per rank, then per generator name."""
    root = np.random.SeedSequence(int(snapshot.digest, 16), spawn_key=(rank,))
    names = sorted(snapshot.states)
    children = root.spawn(len(names))
    return {
        name: _derive(snapshot.states[name], child)
        for name, child in zip(names, children, strict=True)
    }
