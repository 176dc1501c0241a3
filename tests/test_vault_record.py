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
from rngvault import _seeding, _vault
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
    """A local store whose records cannot be written the first ``fail`` times, raising
    ``error``; counts the tries."""

    def __init__(self, root: Path, fail: int, error: Exception) -> None:
        super().__init__(root)
        self.fail = fail
        self.error = error
        self.calls = 0

    def put_record(self, run: str, record: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error
        return super().put_record(run, record)


def test_a_record_the_store_could_not_be_reached_for_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FailingRecords(tmp_path, fail=1, error=rngvault.TransportError("away"))
    monkeypatch.setattr(_vault, "RECORD_RETRY", 3600.0)
    with pytest.warns(rngvault.StoreWarning, match="tried again with a later snapshot"):
        vault = rngvault.Vault(store, run="alice/away", config={"x": 1})
        vault.snapshot("a", durable=True)
    vault.snapshot("b", durable=True)  # within RECORD_RETRY: not tried again
    assert store.calls == 1
    vault._record_retry_at = 0.0  # RECORD_RETRY has passed
    vault.snapshot("c", durable=True)
    vault.close()
    assert [i.name for i in store.snapshots("alice/away")] == ["a", "b", "c"]
    assert store.calls == 2
    assert store.record("alice/away")["config"] == {"x": 1}
    # the store was given as an object: still usable after close()
    assert store.get("alice/away", "a")


@pytest.mark.parametrize(
    ("error", "warned"),
    [
        (rngvault.RecordError("bad field"), True),
        (rngvault.StoreError("no record routes"), True),
        (rngvault.AuthError("refused the token"), False),  # the snapshots' warning says it
    ],
)
def test_a_record_the_store_refuses_is_given_up_after_one_warning(
    tmp_path: Path, error: Exception, warned: bool
) -> None:
    store = FailingRecords(tmp_path, fail=100, error=error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with rngvault.Vault(store, run="alice/refused") as vault:
            for name in "abcde":
                vault.snapshot(name, durable=True)
    said = [w for w in caught if "the run has no record" in str(w.message)]
    assert len(said) == int(warned)
    assert store.calls == 1
    assert len(store.snapshots("alice/refused")) == 5


def test_a_resumed_process_that_sets_no_seed_or_config_is_not_warned(tmp_path: Path) -> None:
    rngvault.seed_everything(7)
    with rngvault.Vault(tmp_path, run="alice/resume", config={"lr": 0.1}) as vault:
        vault.snapshot("a")
    _seeding._SEEDED.clear()  # the resumed process restores its states instead of seeding
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with rngvault.Vault(tmp_path, run="alice/resume") as vault:
            vault.snapshot("b")


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
