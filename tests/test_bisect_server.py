"""rngvault.bisect through a live server: the same report as from the local store.

Runs alice/a and alice/b of tests/test_bisect.py's loop (10,000 steps, one extra
``augment`` draw at step 6,123 in B) are built once for the module in a local store, and
their exact bytes copied into the SQLite database of an ``rngvault serve`` on loopback.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import rngvault
from rngvault.server.storage.base import SnapshotKey
from rngvault.server.storage.sqlite import SQLiteStore
from rngvault.stores.http import HttpStore
from tests._live import ServerProcess

pytest.importorskip("torch", reason="torch is not installed")
from tests.test_bisect import PLANTED, STEPS, scratch, train

RUNS = ("alice/a", "alice/b")


async def copy(local: rngvault.LocalStore, db: Path, in_flight: int = 64) -> None:
    """The local store's snapshots of RUNS, byte for byte, into the server's database
    through its storage backend."""
    store = await SQLiteStore.open(f"sqlite:///{db}")
    gate = asyncio.Semaphore(in_flight)

    async def one(run: str, name: str) -> None:
        data = local.get(run, name)
        async with gate:
            await store.put(SnapshotKey(*run.split("/"), name), data, rngvault.decode(data))

    try:
        for run in RUNS:
            await asyncio.gather(*(one(run, entry.name) for entry in local.steps(run)))
    finally:
        await store.close()


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Path, str]]:
    """(the local store's directory, the live server's URL), both holding RUNS."""
    root = scratch()
    server = None
    try:
        train(root / "local", "alice/a", STEPS)
        train(root / "local", "alice/b", STEPS, plant={PLANTED: "augment"})
        asyncio.run(copy(rngvault.LocalStore(root / "local"), root / "server.db"))
        (root / "home").mkdir()
        server = ServerProcess(root / "home", root / "server.db").start()
        yield root / "local", server.url
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def remote(stores: tuple[Path, str]) -> Iterator[HttpStore]:
    store = HttpStore(stores[1])
    yield store
    store.close()


def test_bisect_through_the_server_names_the_planted_step(remote: HttpStore) -> None:
    """Through an HttpStore, bisect names step 6,123, augment alone 1 raw output ahead,
    and step 6,122 as the last equal one."""
    report = rngvault.bisect(remote, "alice/a", "alice/b")
    assert report.diverged_at == PLANTED and report.last_equal == PLANTED - 1
    assert [(g.name, g.status, g.distance) for g in report.generators] == [
        ("augment", "advanced", 1)
    ]
    assert (report.compared, report.only_a, report.only_b) == (PLANTED + 1, 0, 0)


def test_the_server_and_the_local_store_give_the_same_reports(
    stores: tuple[Path, str], remote: HttpStore
) -> None:
    """For every generator, for augment alone and for python.global alone (which agrees
    on all 10,000 steps), the server's report equals the local store's."""
    local, _ = stores
    for generator in (None, "augment", "python.global"):
        here = rngvault.bisect(local, "alice/a", "alice/b", generator=generator)
        assert rngvault.bisect(remote, "alice/a", "alice/b", generator=generator) == here
    assert rngvault.bisect(remote, "alice/a", "alice/b", generator="python.global").agree


def test_an_unknown_run_on_the_server_is_named(remote: HttpStore) -> None:
    """A run the server does not hold: NotFoundError naming it."""
    with pytest.raises(rngvault.NotFoundError, match="alice/nope"):
        rngvault.bisect(remote, "alice/a", "alice/nope")


def test_restore_at_a_step_through_the_server(stores: tuple[Path, str]) -> None:
    """A Vault on the server restores alice/b at step 6,123 (name found through the
    server's steps listing) to the same states as the local store's snapshot of it."""
    local, url = stores
    vault = rngvault.Vault(url, run="bob/replay", on_error="raise")
    try:
        augment = vault.track(np.random.default_rng(0), "augment")
        vault.restore(step=PLANTED, run="alice/b")
        expected = rngvault.decode(rngvault.LocalStore(local).get("alice/b", f"step-{PLANTED}"))
        assert rngvault.capture({"augment": augment}).states == expected.states
    finally:
        vault.close()
