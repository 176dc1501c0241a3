"""Server test fixtures: snapshot factories, stores, and a real uvicorn server process."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import msgpack
import numpy as np
import pytest

import rngvault
from rngvault import Metadata, Snapshot


def make_snapshot(
    seed: int,
    *,
    shared: int = 0,
    rank: int = 0,
    world_size: int = 1,
    step: int | None = None,
    epoch: int | None = None,
) -> Snapshot:
    """Three generators: ``moving`` depends on ``seed``; ``fixed`` and ``legacy`` only on
    ``shared``, so snapshots of one ``shared`` value share two of their three states."""
    moving = np.random.default_rng(seed)
    snapshot = rngvault.capture(
        {
            "moving": moving,
            "fixed": random.Random(shared),
            "legacy": np.random.RandomState(shared),
        },
        include_globals=False,
        metadata=Metadata(
            step=step if step is not None else seed,
            epoch=epoch,
            metrics={"loss": 1.0 / (seed + 1)},
            rank=rank,
            world_size=world_size,
        ),
    )
    return dataclasses.replace(snapshot, created=1_700_000_000.0 + seed)


def make_body(seed: int, **kwargs: int) -> bytes:
    """``make_snapshot`` encoded."""
    return rngvault.encode(make_snapshot(seed, **kwargs))


def noncanonical(body: bytes) -> bytes:
    """The same snapshot with its states map written in reverse order: valid, not canonical."""
    raw = msgpack.unpackb(body, raw=False, strict_map_key=False)
    raw["states"] = dict(reversed(list(raw["states"].items())))
    return msgpack.packb(raw, use_bin_type=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(name="make_snapshot")
def _make_snapshot_fixture() -> Callable[..., Snapshot]:
    return make_snapshot


@pytest.fixture(name="make_body")
def _make_body_fixture() -> Callable[..., bytes]:
    return make_body


@pytest.fixture(name="noncanonical")
def _noncanonical_fixture() -> Callable[[bytes], bytes]:
    return noncanonical
