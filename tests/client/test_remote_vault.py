"""The Vault against a real server: the same behaviour as the local store, outages included."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest

import rngvault
from rngvault.stores.http import HttpStore, SpoolWarning
from tests._live import ServerProcess


class RecordingStore(HttpStore):
    """An HTTP store that remembers the bytes it was handed, to compare with the server's."""

    def __init__(self, url: str, **kwargs: object) -> None:
        super().__init__(url, **kwargs)  # type: ignore[arg-type]
        self.handed: dict[str, bytes] = {}

    def put(self, run: str, name: str, data: bytes, snapshot: rngvault.Snapshot) -> bool:
        self.handed[name] = data
        return super().put(run, name, data, snapshot)

    def put_many(
        self, items: Sequence[tuple[str, str, bytes, rngvault.Snapshot]]
    ) -> list[bool | rngvault.RngVaultError]:
        self.handed.update((name, data) for _run, name, data, _snapshot in items)
        return super().put_many(items)


def _server_bytes(url: str, run: str, name: str) -> bytes:
    response = httpx.get(
        f"{url}/v1/runs/{run}/snapshots/{name}", headers={"Accept": "application/msgpack"}
    )
    response.raise_for_status()
    return response.content


def test_resumed_training_is_bit_identical_through_a_server(
    live_server: ServerProcess, tmp_path: Path
) -> None:
    """The end-to-end training test, with snapshots pushed to and fetched from a server."""
    pytest.importorskip("torch", reason="torch is not installed")
    from tests.test_e2e_training import check_resume_matches

    check_resume_matches(live_server.url, tmp_path)


def test_fetch_and_restore_a_teammates_snapshot(live_server: ServerProcess) -> None:
    """rngvault.fetch gets a snapshot pushed by another Vault, and restore is exact."""
    alice = rngvault.Vault(live_server.url, run="alice/exp", on_error="raise")
    aug = alice.track(np.random.default_rng(11), "augment")
    alice.snapshot("epoch1", durable=True)
    expected = (random.random(), aug.normal())

    snapshot = rngvault.fetch("alice/exp", "epoch1", url=live_server.url)
    assert snapshot.ref == rngvault.SnapshotRef("alice/exp", "epoch1", snapshot.digest)
    other = np.random.default_rng(0)
    rngvault.restore(snapshot, {"augment": other})
    assert (random.random(), other.normal()) == expected
    with pytest.raises(rngvault.NotFoundError, match="404"):
        rngvault.fetch("alice/exp", "nope", url=live_server.url)


def test_outage_loses_nothing_and_never_raises(
    server_factory: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 snapshots while the server hangs (SIGSTOP), then dies (SIGKILL), then comes back:
    the loop never raises, and every snapshot ends up on the server, byte for byte."""
    monkeypatch.setenv("RNGVAULT_TIMEOUT", "1")
    server: ServerProcess = server_factory()  # type: ignore[operator]
    store = RecordingStore(server.url)
    vault = rngvault.Vault(store, run="alice/outage")  # on_error="warn": never raises
    aug = vault.track(np.random.default_rng(3), "augment")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(200):
            if i == 50:
                server.pause()
            if i == 100:
                server.kill9()
            vault.snapshot(f"s{i:03d}", step=i)
            aug.normal(size=10)
            time.sleep(0.005)
        vault.flush(timeout=60)
    assert any(issubclass(w.category, SpoolWarning) for w in caught)
    assert len(store.spool) > 0  # the server was away: some snapshots wait on disk

    server.start()  # back, on the same port and database
    assert vault.flush(timeout=60) is True
    assert len(store.spool) == 0
    assert len(store.handed) == 200
    for name, data in store.handed.items():
        assert _server_bytes(server.url, "alice/outage", name) == data, name


def test_next_process_sends_what_was_left_in_the_spool(
    server_factory: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots spooled while the server was down are sent by the next store for it."""
    monkeypatch.setenv("RNGVAULT_TIMEOUT", "1")
    server: ServerProcess = server_factory()  # type: ignore[operator]
    server.kill9()
    first = RecordingStore(server.url)
    with pytest.warns(rngvault.StoreWarning, match="does not answer"):  # checked at start
        vault = rngvault.Vault(first, run="alice/later")
    with pytest.warns(SpoolWarning):
        for i in range(3):
            vault.snapshot(f"s{i}")
        vault.flush(timeout=30)
    vault.close()  # this process ends; its spool stays on disk
    server.start()
    HttpStore(server.url)  # the next process: sends the spool in the background
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            for name, data in first.handed.items():
                assert _server_bytes(server.url, "alice/later", name) == data
            break
        except httpx.HTTPStatusError:
            time.sleep(0.1)
    else:
        pytest.fail("the spool was not sent")
    # the run's record waited with them, and went first
    answer = httpx.get(f"{server.url}/v1/runs/alice/later", timeout=10)
    assert answer.status_code == 200 and answer.json()["record"]["command"]


@pytest.mark.parametrize("idle", [False, True], ids=["busy", "writer-idle"])
def test_exit_says_how_many_wait_in_the_spool_and_where(
    server_factory: object, tmp_path: Path, idle: bool
) -> None:
    """A script whose server is down exits normally, naming the spool and what waits, also
    when its writer thread has gone idle and ended before exit."""
    import os
    import subprocess
    import sys

    server: ServerProcess = server_factory()  # type: ignore[operator]
    server.kill9()
    home = tmp_path / "script-home"
    code = (
        "import rngvault, rngvault._writer, time\n"
        f"v = rngvault.Vault({server.url!r}, run='alice/exit')\n"
        "v.snapshot('a'); v.snapshot('b')\n"
    )
    if idle:
        code = code.replace("\n", "\nrngvault._writer.IDLE_EXIT = 0.1\n", 1)
        code += "v.flush(); time.sleep(1)\n"
    env = dict(
        os.environ,
        RNGVAULT_HOME=str(home),
        RNGVAULT_TIMEOUT="1",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert f"2 snapshot(s) for {server.url} are left in the spool at" in done.stderr
    assert str(home / "spool") in done.stderr
    assert len(list((home / "spool").rglob("*.snap"))) == 2


def test_snapshots_queued_at_exit_reach_the_server(live_server: ServerProcess) -> None:
    """A script that takes snapshots and ends without flush(): every one is on the server
    (the exit flush still has its connections)."""
    import os
    import subprocess
    import sys

    code = (
        "import rngvault\n"
        f"v = rngvault.Vault({live_server.url!r}, run='alice/atexit')\n"
        "v.snapshot('warm'); v.flush()\n"
        "for i in range(20):\n"
        "    v.snapshot(f's{i}')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    names = {info.name for info in HttpStore(live_server.url).snapshots("alice/atexit")}
    assert names == {"warm"} | {f"s{i}" for i in range(20)}
