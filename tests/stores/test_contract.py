"""The client Store contract, run against every store: a directory and a real server.

Whatever the store, the same calls give the same answers: puts and re-puts, conflicts,
reads, misses, and one listing record (``SnapshotInfo``) with every field, tags and world
size included.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import rngvault
from rngvault.stores import LocalStore, SnapshotInfo, Store
from rngvault.stores.http import HttpStore

RUN = "alice/contract"


@pytest.fixture(params=["local", "http"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, server_factory: Callable[..., object]
) -> Iterator[Store]:
    if request.param == "local":
        made: Store = LocalStore(tmp_path / "store")
    else:
        server = server_factory()
        made = HttpStore(server.url)  # type: ignore[attr-defined]
    yield made
    made.close()


def _snapshot(seed: int, **metadata: object) -> rngvault.Snapshot:
    snap = rngvault.capture(
        {"a": np.random.default_rng(seed), "py": random.Random(seed)}, include_globals=False
    )
    return dataclasses.replace(snap, metadata=rngvault.Metadata(**metadata), created=1e9 + seed)  # type: ignore[arg-type]


def _put(store: Store, name: str, snap: rngvault.Snapshot) -> bool:
    return store.put(RUN, name, rngvault.encode(snap), snap)


def test_put_then_the_same_bytes_again(store: Store) -> None:
    """A put stores (True); the same bytes again are already stored (False)."""
    snap = _snapshot(1)
    assert _put(store, "s", snap) is True
    assert _put(store, "s", snap) is False
    assert store.get(RUN, "s") == rngvault.encode(snap)


def test_the_same_snapshot_taken_again_is_already_stored(store: Store) -> None:
    """Same states and user metadata, another `created` and environment: not a conflict;
    the stored bytes are kept."""
    snap = _snapshot(2, step=3, tags=("a",))
    _put(store, "s", snap)
    again = dataclasses.replace(snap, created=2e9, environment={"host": "elsewhere"})
    assert _put(store, "s", again) is False
    assert store.get(RUN, "s") == rngvault.encode(snap)


@pytest.mark.parametrize(
    "other",
    [
        _snapshot(4, step=3, tags=("a",)),  # other states
        _snapshot(3, step=4, tags=("a",)),  # other step
        _snapshot(3, step=3, tags=("b",)),  # other tags
    ],
    ids=["states", "step", "tags"],
)
def test_other_content_under_a_taken_name_is_a_conflict(
    store: Store, other: rngvault.Snapshot
) -> None:
    _put(store, "s", _snapshot(3, step=3, tags=("a",)))
    with pytest.raises(rngvault.ConflictError):
        _put(store, "s", other)
    assert rngvault.decode(store.get(RUN, "s")).metadata.tags == ("a",)


def test_missing_runs_names_and_ranks_are_not_found(store: Store) -> None:
    _put(store, "s", _snapshot(5))
    for run, name, rank in ((RUN, "nope", 0), ("alice/nope", "s", 0), (RUN, "s", 3)):
        with pytest.raises(rngvault.NotFoundError):
            store.get(run, name, rank)
    with pytest.raises(rngvault.NotFoundError):
        store.snapshots("alice/nope")


def test_the_listing_has_every_field(store: Store) -> None:
    """One SnapshotInfo from every store: tags, world size, step, epoch, metrics, ranks,
    generators, digest, size and created, oldest first."""
    first = _snapshot(6, step=10, epoch=1, tags=("warmup", "lr=0.1"), world_size=4)
    first = dataclasses.replace(
        first, metadata=dataclasses.replace(first.metadata, metrics={"loss": 0.5})
    )
    second = _snapshot(7, epoch=2, world_size=4)
    _put(store, "first", first)
    _put(store, "second", second)
    listed = store.snapshots(RUN)
    expected = [
        SnapshotInfo.of(RUN, "first", first, len(rngvault.encode(first))),
        SnapshotInfo.of(RUN, "second", second, len(rngvault.encode(second))),
    ]
    assert listed == expected
    assert listed[0].tags == ("warmup", "lr=0.1") and listed[0].world_size == 4


def test_runs_and_flush(store: Store) -> None:
    """runs() lists the run once stored; flush() leaves nothing held back."""
    assert RUN not in store.runs()
    _put(store, "s", _snapshot(8))
    assert RUN in store.runs()
    assert store.flush() == 0
