"""Vault and run records: rank 0's first snapshot writes the record, once; a resumed run
keeps the first and warns about a different seed or config; a failing store costs no
snapshot; a store given as an object stays open."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import rngvault
from rngvault import _seeding
from rngvault.stores import LocalStore


@pytest.fixture(autouse=True)
def _fresh_seeding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_seeding, "_SEEDED", {})
    monkeypatch.setattr(_seeding, "_REGISTERED", {})
    monkeypatch.setenv("PYTHONHASHSEED", "0")


def test_the_first_snapshot_writes_the_record(tmp_path: Path) -> None:
    rngvault.seed_everything(42)
    with rngvault.Vault(tmp_path, run="alice/r1", config={"lr": 0.1}) as vault:
        snap = vault.snapshot("start")
        record = vault.record()
    assert record["seed"] == 42
    assert record["config"] == {"lr": 0.1}
    assert record["command"] == [str(a) for a in sys.argv]
    assert record["environment"] == dict(
        rngvault.decode(LocalStore(tmp_path).get("alice/r1", "start")).environment
    )
    assert snap.ref is not None
    assert LocalStore(tmp_path).record("alice/r1") == record


def test_a_resumed_run_keeps_its_first_record_and_warns_of_another_config(
    tmp_path: Path,
) -> None:
    rngvault.seed_everything(1)
    with rngvault.Vault(tmp_path, run="alice/r", config={"lr": 0.1}) as vault:
        vault.snapshot("a")
    first = LocalStore(tmp_path).record("alice/r")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same seed and config: no warning
        with rngvault.Vault(tmp_path, run="alice/r", config={"lr": 0.1}) as vault:
            vault.snapshot("b")
    assert LocalStore(tmp_path).record("alice/r") == first

    rngvault.seed_everything(2)
    with (
        pytest.warns(rngvault.RngVaultWarning, match="another seed and config") as caught,
        rngvault.Vault(tmp_path, run="alice/r", config={"lr": 0.5}) as vault,
    ):
        vault.snapshot("c")
    assert "the first record is kept" in str(caught[0].message)
    assert LocalStore(tmp_path).record("alice/r") == first


def test_other_ranks_write_no_record(tmp_path: Path) -> None:
    with rngvault.Vault(tmp_path, run="alice/ranks", rank=1, world_size=2) as vault:
        vault.snapshot("a")
    assert LocalStore(tmp_path).record("alice/ranks") == {}


class FailingRecords(LocalStore):
    """A local store whose records cannot be written the first ``fail`` times."""

    def __init__(self, root: Path, fail: int) -> None:
        super().__init__(root)
        self.fail = fail
        self.calls = 0

    def put_record(self, run: str, record: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.fail:
            raise rngvault.StoreError("the record store is away")
        return super().put_record(run, record)


def test_a_record_that_cannot_be_stored_costs_no_snapshot_and_is_tried_again(
    tmp_path: Path,
) -> None:
    store = FailingRecords(tmp_path, fail=1)
    with pytest.warns(rngvault.StoreWarning, match="tried again with the next snapshot"):
        vault = rngvault.Vault(store, run="alice/away", config={"x": 1})
        vault.snapshot("a", durable=True)
    vault.snapshot("b", durable=True)
    vault.close()
    assert [i.name for i in store.snapshots("alice/away")] == ["a", "b"]
    assert store.calls == 2
    assert store.record("alice/away")["config"] == {"x": 1}
    # the store was given as an object: still usable after close()
    assert store.get("alice/away", "a")


def test_a_store_without_records_is_fine(tmp_path: Path) -> None:
    class Plain:
        """Only the core methods: no put_record, no record."""

        def __init__(self) -> None:
            self.inner = LocalStore(tmp_path)
            self.location = "plain"

        def __getattr__(self, name: str) -> Any:
            if name in ("put_record", "record", "put_many"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    plain = Plain()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with rngvault.Vault(plain, run="alice/plain", config={"x": 1}) as vault:
            vault.snapshot("a", durable=True)
            with pytest.raises(rngvault.StoreError, match="keeps no run records"):
                vault.record()
