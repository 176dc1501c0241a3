"""Vault: named snapshots in a training loop, background writes, restores, ranks, reports."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault import LocalStore, Vault
from rngvault._writer import _flush_at_exit

torch = pytest.importorskip("torch", reason="torch is not installed")

ROOT = Path(__file__).resolve().parent.parent


def _draws(aug: np.random.Generator) -> tuple[Any, ...]:
    return (random.random(), float(np.random.rand()), float(aug.normal()), torch.rand(3).tolist())


class BlockingStore(LocalStore):
    """A local store whose put waits until ``release`` is set (a slow or hung server)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.entered = threading.Event()

    def put(self, run: str, name: str, data: bytes, snapshot: rngvault.Snapshot) -> bool:
        self.entered.set()
        self.release.wait(30)
        return super().put(run, name, data, snapshot)


def test_snapshot_restore_is_bit_exact(tmp_path: Path) -> None:
    """Draws after restoring a snapshot equal the draws that followed it."""
    vault = Vault(tmp_path, run="alice/exp")
    aug = vault.track(np.random.default_rng(5), "augment")
    vault.snapshot("epoch0", epoch=0)
    expected = _draws(aug)
    _draws(aug)
    vault.flush()
    report = vault.restore("epoch0")
    assert _draws(aug) == expected
    assert set(report.restored) == {"python.global", "numpy.global", "torch.cpu", "augment"}
    assert report.ok and all(o.verified for o in report.outcomes)


def test_restore_from_another_vault_and_run(tmp_path: Path) -> None:
    """A teammate's Vault (another run) restores alice's positions by run name."""
    alice = Vault(tmp_path, run="alice/exp")
    aug = alice.track(np.random.default_rng(1), "augment")
    alice.snapshot("epoch3", durable=True)
    expected = _draws(aug)

    bob = Vault(tmp_path, run="bob/repro")
    bob_aug = bob.track(np.random.default_rng(999), "augment")
    bob.restore("epoch3", run="alice/exp")
    assert _draws(bob_aug) == expected


def test_bad_names_fail_at_the_call(tmp_path: Path) -> None:
    """A bad run, snapshot or generator name is an InvalidNameError where it is given."""
    with pytest.raises(rngvault.InvalidNameError, match="namespace/run"):
        Vault(tmp_path, run="no-slash")
    vault = Vault(tmp_path, run="alice/exp")
    with pytest.raises(rngvault.InvalidNameError, match="generator name"):
        vault.track(random.Random(), "has space")
    with pytest.raises(rngvault.InvalidNameError, match="snapshot name"):
        vault.snapshot("../escape")
    with pytest.raises(rngvault.CaptureError, match="cannot capture a builtins.int"):
        vault.track(3, "three")
    vault.flush()
    assert vault.runs() == []


def test_snapshot_does_not_wait_for_the_store(tmp_path: Path) -> None:
    """snapshot() returns while the store is still busy; flush() waits for it."""
    store = BlockingStore(tmp_path)
    vault = Vault(store, run="alice/exp")
    vault.snapshot("s0")
    assert store.entered.wait(10)
    assert vault.flush(timeout=0.2) is False  # still blocked in put
    store.release.set()
    assert vault.flush(timeout=30) is True
    assert [i.name for i in vault.snapshots()] == ["s0"]


def test_durable_snapshot_is_stored_before_returning(tmp_path: Path) -> None:
    """durable=True returns the stored snapshot, probes and environment included."""
    vault = Vault(tmp_path, run="alice/exp")
    snap = vault.snapshot("s0", step=10, metrics={"loss": 0.5}, tags=["warmup"], durable=True)
    assert LocalStore(tmp_path).get("alice/exp", "s0") == rngvault.encode(snap)
    assert set(snap.probes) == {"python.global", "numpy.global", "torch.cpu"}
    assert snap.environment["numpy"] == np.__version__
    assert snap.metadata.metrics == {"loss": 0.5} and snap.metadata.tags == ("warmup",)
    assert snap.ref == rngvault.SnapshotRef("alice/exp", "s0", snap.digest)


def test_conflict_raises_from_next_call_with_on_error_raise(tmp_path: Path) -> None:
    """A name taken by other content raises ConflictError from flush() (on_error="raise")."""
    vault = Vault(tmp_path, run="alice/exp", on_error="raise")
    vault.snapshot("s0")
    vault.flush()
    random.random()
    vault.snapshot("s0")
    with pytest.raises(rngvault.ConflictError, match="s0"):
        vault.flush()
    vault.flush()  # the error was reported once


def test_conflict_warns_once_per_problem(tmp_path: Path) -> None:
    """With on_error="warn" a repeated storage problem warns once, and never raises."""
    vault = Vault(tmp_path, run="alice/exp")
    vault.snapshot("s0", durable=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            random.random()
            vault.snapshot("s0")
            vault.flush()
    messages = [str(w.message) for w in caught if issubclass(w.category, rngvault.StoreWarning)]
    assert len(messages) == 1 and "s0" in messages[0]


def test_snapshot_ref_round_trips_and_restores(tmp_path: Path) -> None:
    """A SnapshotRef (or its string) restores that snapshot; a wrong digest is refused."""
    vault = Vault(tmp_path, run="alice/exp")
    snap = vault.snapshot("epoch1", durable=True)
    ref = snap.ref
    assert ref is not None
    assert rngvault.SnapshotRef.parse(str(ref)) == ref
    expected = random.random()
    vault.restore(ref)
    assert random.random() == expected
    vault.restore(str(ref))
    assert random.random() == expected
    wrong = dataclasses.replace(ref, digest="0" * 64)
    with pytest.raises(rngvault.RestoreError, match="not the snapshot the reference"):
        vault.restore(wrong)
    with pytest.raises(rngvault.InvalidNameError, match="reference"):
        rngvault.SnapshotRef.parse("alice/exp@123")


def test_ranks_store_one_entry_each_and_restore_their_own(tmp_path: Path) -> None:
    """Two ranks snapshot under one name; each restores its own states."""
    r0 = Vault(tmp_path, run="team/ddp", rank=0, world_size=2, track_globals=False)
    r1 = Vault(tmp_path, run="team/ddp", rank=1, world_size=2, track_globals=False)
    g0 = r0.track(np.random.default_rng(0), "aug")
    g1 = r1.track(np.random.default_rng(1), "aug")
    r0.snapshot("s", durable=True)
    r1.snapshot("s", durable=True)
    e0, e1 = g0.random(), g1.random()
    [info] = r0.snapshots()
    assert info.ranks == (0, 1) and info.world_size == 2
    r1.restore("s")
    assert g1.random() == e1
    r0.restore("s")
    assert g0.random() == e0


def test_world_size_change_needs_remap(tmp_path: Path) -> None:
    """Restoring with another world size names both sizes, unless remap="spawn"."""
    for rank in range(2):
        v = Vault(tmp_path, run="team/ddp", rank=rank, world_size=2, track_globals=False)
        v.track(np.random.default_rng(rank), "aug")
        v.snapshot("s", durable=True)

    solo = Vault(tmp_path, run="team/ddp", rank=0, world_size=1, track_globals=False)
    solo.track(np.random.default_rng(7), "aug")
    with pytest.raises(rngvault.RestoreError, match="world size 2.*world size 1"):
        solo.restore("s")
    report = solo.restore("s", remap="spawn")
    assert any("ranks 1 of the snapshot were dropped" in n for n in report.notes)

    def derived(rank: int) -> float:
        v = Vault(tmp_path, run="team/ddp", rank=rank, world_size=3, track_globals=False)
        g = v.track(np.random.default_rng(123), "aug")
        report = v.restore("s", remap="spawn")
        assert (rank == 2) == any("derived" in n for n in report.notes)
        return float(g.random())

    assert derived(2) == derived(2)  # deterministic
    assert derived(2) != derived(1)  # and distinct from the recorded ranks


def test_rank_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RANK and WORLD_SIZE set the rank; rank= overrides them."""
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    vault = Vault(tmp_path, run="team/ddp")
    assert (vault.rank, vault.world_size, vault.local_rank) == (2, 4, 0)
    assert Vault(tmp_path, run="team/ddp", rank=1).rank == 1
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(rngvault.RngVaultError, match="RANK='x'"):
        Vault(tmp_path, run="team/ddp")


def _store_with(
    tmp_path: Path, name: str, **changes: Any
) -> tuple[Vault, np.random.Generator, rngvault.Snapshot]:
    """A vault holding snapshot ``name`` whose stored copy has fields changed."""
    vault = Vault(tmp_path, run="alice/exp")
    aug = vault.track(np.random.default_rng(3), "augment")
    snap = vault.snapshot("tmp", durable=True)
    changed = dataclasses.replace(snap, **changes)
    vault.store.put("alice/exp", name, rngvault.encode(changed), changed)
    return vault, aug, changed


def test_environment_differences_are_graded_and_strict_refuses(tmp_path: Path) -> None:
    """A recorded NumPy version that differs is reported as may-break for Generators;
    strict=True refuses before touching anything."""
    env: dict[str, Any] = {}
    vault, aug, snap = _store_with(tmp_path, "old", environment=env)
    env.update(Vault(tmp_path, run="x/y").snapshot("e", durable=True).environment)
    env["numpy"] = "1.0.0"
    vault.store.put("alice/exp", "old2", rngvault.encode(snap), snap)
    before = aug.bit_generator.state
    with pytest.raises(rngvault.RestoreError, match="numpy: recorded '1.0.0'"):
        vault.restore("old2", strict=True)
    assert aug.bit_generator.state == before
    report = vault.restore("old2")
    [numpy_diff] = [d for d in report.differences if d.key == "numpy"]
    assert numpy_diff.severity == "may-break" and "Generator" in numpy_diff.affects
    assert "numpy" in str(report) and "1.0.0" in str(report)


def test_probes_detect_same_state_different_numbers(tmp_path: Path) -> None:
    """Probes that no longer match the stored state are reported by verify and restore."""
    vault, _aug, snap = _store_with(tmp_path, "tampered", probes={})
    probes = dict(Vault(tmp_path, run="alice/exp").get("tmp").probes)
    probes["augment"] = [0.0, 0.0, 0.0, 0]
    tampered = dataclasses.replace(snap, probes=probes)
    vault.store.put("alice/exp", "tampered2", rngvault.encode(tampered), tampered)
    verdicts = vault.verify("tampered2")
    assert verdicts["augment"].startswith("differs")
    assert verdicts["python.global"] == "ok"
    report = vault.restore("tampered2")
    assert any("augment: same state, different numbers" in n for n in report.notes)
    assert vault.verify("tmp") == {name: "ok" for name in probes}


def test_apply_flags_reapplies_recorded_determinism_flags(tmp_path: Path) -> None:
    """apply_flags=True sets cudnn and deterministic-algorithm flags as recorded."""
    vault = Vault(tmp_path, run="alice/exp")
    old = torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled()
    try:
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)
        vault.snapshot("flags", durable=True)
        torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(False)
        report = vault.restore("flags")
        assert any(d.key == "flags.cudnn.deterministic" for d in report.differences)
        assert torch.backends.cudnn.deterministic is False
        vault.restore("flags", apply_flags=True)
        assert torch.backends.cudnn.deterministic is True
        assert torch.are_deterministic_algorithms_enabled() is True
    finally:
        torch.backends.cudnn.deterministic = old[0]
        torch.use_deterministic_algorithms(old[1])


def test_forked_child_never_runs_the_parents_writer(tmp_path: Path) -> None:
    """In a forked child the parent's pending snapshots are neither written nor flushed,
    and the child can use a Vault of its own."""
    store = BlockingStore(tmp_path)
    vault = Vault(store, run="alice/exp")
    vault.snapshot("parent-pending")
    assert store.entered.wait(10)
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            ok_flush = vault.flush(timeout=5)  # not ours: returns at once
            _flush_at_exit()  # what atexit would run: must not wait on the parent's queue
            child = Vault(tmp_path, run="child/run")
            child.snapshot("c", durable=True)
            vault.snapshot("from-child", durable=False)
            store.release.set()  # our copy of the event: lets the child's own job through
            child_done = vault.flush(timeout=10)
            code = 0 if ok_flush and child_done else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.release.set()
    vault.flush(timeout=30)
    names = {i.name for i in vault.snapshots()}
    assert names == {"parent-pending", "from-child"}
    assert LocalStore(tmp_path).runs() == ["alice/exp", "child/run"]


def test_probes_can_be_turned_off(tmp_path: Path) -> None:
    """probes=False records none; verify() then says so for every generator."""
    vault = Vault(tmp_path, run="alice/noprobes", probes=False)
    vault.track(np.random.default_rng(1), "augment")
    vault.snapshot("s", durable=True)
    assert vault.get("s").probes == {}
    assert set(vault.verify("s").values()) == {"no probe recorded"}
    with_probes = Vault(tmp_path, run="alice/probes")
    with_probes.track(np.random.default_rng(1), "augment")
    with_probes.snapshot("s", durable=True)
    assert "augment" in with_probes.get("s").probes


def test_an_idle_writer_thread_ends_and_a_closed_vault_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Vault's writer thread ends once idle, and a later snapshot starts a new one; a
    Vault that took snapshots stays held, without a thread, until close() (or exit, which
    flushes it); after close() a dropped Vault is collected."""
    import gc
    import time
    import weakref

    from rngvault import _writer

    monkeypatch.setattr(_writer, "IDLE_EXIT", 0.2)

    def writer_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "rngvault-writer[alice/idle]"]

    def wait_until(condition: Any) -> bool:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.05)
        return bool(condition())

    vault = Vault(tmp_path, run="alice/idle", track_globals=False)
    vault.track(np.random.default_rng(1), "augment")
    vault.snapshot("first")
    vault.flush()
    assert len(writer_threads()) == 1
    assert wait_until(lambda: not writer_threads()), "the idle writer thread did not end"
    vault.snapshot("second")  # starts a new thread
    vault.flush()
    assert {i.name for i in vault.snapshots()} == {"first", "second"}
    kept = weakref.ref(vault)
    del vault
    assert wait_until(lambda: not writer_threads())
    gc.collect()
    vault = kept()
    assert vault is not None, "an unclosed Vault with snapshots must wait for the exit flush"
    vault.close()
    del vault
    assert wait_until(lambda: kept() is None), "a closed, dropped Vault is still alive"


def test_a_snapshot_where_no_thread_can_start_is_stored_on_the_calling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At interpreter shutdown (Python 3.12+) threads cannot start: the snapshot is then
    stored by the thread that takes it instead of waiting forever."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    vault = Vault(tmp_path, run="alice/late", track_globals=False)
    vault.track(np.random.default_rng(1), "augment")
    monkeypatch.setattr(threading.Thread, "start", refuse)
    vault.snapshot("final")
    assert vault._writer.pending == 0
    monkeypatch.undo()
    assert [i.name for i in vault.snapshots()] == ["final"]
    vault.close()


def test_a_warning_turned_into_an_error_does_not_stop_the_writer(tmp_path: Path) -> None:
    """With warnings as errors (-W error), a failed write is raised at the next call, and
    later snapshots are still stored."""

    class FailsOnce(LocalStore):
        failed = False

        def put(self, run: str, name: str, data: bytes, snapshot: rngvault.Snapshot) -> bool:
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise rngvault.StoreError("disk on fire")
            return super().put(run, name, data, snapshot)

    vault = Vault(FailsOnce(tmp_path), run="alice/strict", track_globals=False)
    vault.track(np.random.default_rng(1), "augment")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vault.snapshot("lost")
        with pytest.raises(rngvault.StoreWarning, match="disk on fire"):
            vault.flush(timeout=10)
        vault.snapshot("kept")
        assert vault.flush(timeout=10)
    assert [i.name for i in vault.snapshots()] == ["kept"]
    vault.close()


def _run_script(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environ
    )


def test_pending_snapshots_are_flushed_at_exit(tmp_path: Path) -> None:
    """A script that never calls flush() still stores every snapshot by the time it exits."""
    done = _run_script(
        "import rngvault, random\n"
        f"v = rngvault.Vault({str(tmp_path)!r}, run='alice/exit')\n"
        "for i in range(20):\n"
        "    v.snapshot(f's{i}'); random.random()\n"
    )
    assert done.returncode == 0, done.stderr
    assert len(LocalStore(tmp_path).snapshots("alice/exit")) == 20


def test_exit_wait_is_bounded_and_says_what_was_left(tmp_path: Path) -> None:
    """With a store that never answers, exit waits RNGVAULT_EXIT_TIMEOUT and warns."""
    done = _run_script(
        "import rngvault, threading\n"
        "class Hung(rngvault.LocalStore):\n"
        "    def put(self, *a):\n"
        "        threading.Event().wait()\n"
        f"v = rngvault.Vault(Hung({str(tmp_path)!r}), run='alice/hung')\n"
        "v.snapshot('a'); v.snapshot('b')\n",
        RNGVAULT_EXIT_TIMEOUT="0.5",
    )
    assert done.returncode == 0, done.stderr
    assert "2 snapshot(s) of alice/hung were not stored within 0.5 s" in done.stderr


def test_restore_report_lists_skipped_and_missing(tmp_path: Path) -> None:
    """A state with no target is skipped, a tracked generator absent from the snapshot is
    missing; strict=True refuses both before touching anything."""
    vault = Vault(tmp_path, run="alice/exp", track_globals=False)
    vault.track(np.random.default_rng(1), "old")
    vault.snapshot("s", durable=True)
    vault.untrack("old")
    new = vault.track(np.random.default_rng(2), "new")
    report = vault.restore("s")
    assert report.skipped == ["old"] and report.missing == ["new"]
    before = new.bit_generator.state
    with pytest.raises(rngvault.RestoreError, match="old: skipped"):
        vault.restore("s", strict=True)
    assert new.bit_generator.state == before


def _train(vault: Vault, aug: np.random.Generator, epochs: int, extra_draw_at: int | None) -> None:
    for epoch in range(epochs):
        vault.snapshot(f"epoch{epoch}", epoch=epoch)
        if epoch == extra_draw_at:
            aug.random()  # the reproduction's bug: one extra draw
        aug.normal(size=3)
        random.random()


def test_divergence_is_reported_at_the_epoch_it_happens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One extra draw in epoch 1 of a reproduction is reported at epoch 2, naming the
    generator and the distance; on_divergence gets the report; strict raises from flush()."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    rngvault.seed_everything(0)
    alice = Vault(tmp_path, run="alice/exp")
    _train(alice, alice.track(np.random.default_rng(7), "augment"), 4, None)
    alice.flush()

    rngvault.seed_everything(0)
    seen: list[rngvault.DivergenceReport] = []
    bob = Vault(
        tmp_path, run="bob/repro", reference="alice/exp", on_divergence=seen.append, strict=True
    )
    with pytest.warns(rngvault.DivergenceWarning, match="epoch2"):
        _train(bob, bob.track(np.random.default_rng(7), "augment"), 2, 1)
        bob.snapshot("epoch2")
        with pytest.raises(rngvault.DivergenceError) as raised:
            bob.flush()
    [report] = seen
    assert raised.value.report is report
    assert (report.snapshot, report.generator, report.status) == ("epoch2", "augment", "advanced")
    assert report.distance == 1 and report.unit == "raw 64-bit outputs"
    assert "'epoch2'" in str(report) and "'augment'" in str(report) and "1 raw" in str(report)
    bob.snapshot("epoch3")  # reported once: later snapshots do not raise again
    bob.flush()


def test_matching_reproduction_reports_no_divergence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A faithful reproduction (same seeds, same draws) never diverges."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    rngvault.seed_everything(1)
    alice = Vault(tmp_path, run="alice/exp")
    _train(alice, alice.track(np.random.default_rng(3), "augment"), 3, None)
    alice.flush()
    rngvault.seed_everything(1)
    bob = Vault(tmp_path, run="bob/repro", reference="alice/exp", strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rngvault.DivergenceWarning)
        _train(bob, bob.track(np.random.default_rng(3), "augment"), 3, None)
        bob.flush()
    assert bob.divergence is None


def test_vault_diff_reports_draw_distance(tmp_path: Path) -> None:
    """vault.diff names how far each generator moved between two snapshots."""
    vault = Vault(tmp_path, run="alice/exp", track_globals=False)
    aug = vault.track(np.random.default_rng(0), "augment")
    vault.snapshot("a")
    aug.bit_generator.random_raw(25)
    vault.snapshot("b")
    vault.flush()
    report = vault.diff("a", "b")
    assert report["augment"].status == "advanced" and report["augment"].distance == 25


def test_metadata_is_checked_at_the_call(tmp_path: Path) -> None:
    """Metrics of other types than int/float/str/bool, or a non-int step, fail at
    snapshot(); numpy and torch scalars are accepted as plain values."""
    vault = Vault(tmp_path, run="alice/exp", on_error="raise", track_globals=False)
    vault.track(np.random.default_rng(0), "g")
    snap = vault.snapshot(
        "ok", step=np.int64(3), metrics={"loss": np.float32(0.5), "acc": torch.tensor(0.25)}
    )
    assert snap.metadata.step == 3 and snap.metadata.metrics == {"loss": 0.5, "acc": 0.25}
    with pytest.raises(rngvault.EncodeError, match="metric 'bad' must be"):
        vault.snapshot("x", metrics={"bad": [1, 2]})
    with pytest.raises(rngvault.EncodeError, match="step must be an int"):
        vault.snapshot("x", step=1.5)  # type: ignore[arg-type]
    with pytest.raises(rngvault.EncodeError, match="tags must be a list"):
        vault.snapshot("x", tags="warmup")
    vault.flush()
    assert [i.name for i in vault.snapshots()] == ["ok"]


def test_strict_with_apply_flags_applies_instead_of_refusing(tmp_path: Path) -> None:
    """strict=True refuses a determinism flag that differs; with apply_flags=True the flag
    is set instead, and the restore goes through."""
    vault = Vault(tmp_path, run="alice/exp")
    old = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        vault.snapshot("det", durable=True)
        torch.use_deterministic_algorithms(False)
        with pytest.raises(rngvault.RestoreError, match="deterministic_algorithms"):
            vault.restore("det", strict=True)
        vault.restore("det", strict=True, apply_flags=True)
        assert torch.are_deterministic_algorithms_enabled() is True
    finally:
        torch.use_deterministic_algorithms(old)


class UnreachableReference(LocalStore):
    """A store whose reference run cannot be read (a server that is away)."""

    def get(self, run: str, name: str, rank: int = 0, *, digest: str | None = None) -> bytes:
        if run == "alice/ref":
            raise rngvault.TransportError("http://vault: connection refused")
        return super().get(run, name, rank, digest=digest)


def test_an_unreachable_reference_never_fails_the_snapshot(tmp_path: Path) -> None:
    """When the reference run cannot be read, snapshots are still stored and the check is
    skipped with one warning."""
    vault = Vault(
        UnreachableReference(tmp_path), run="bob/repro", reference="alice/ref", on_error="raise"
    )
    with pytest.warns(rngvault.DivergenceWarning, match="cannot compare") as caught:
        vault.snapshot("e0", durable=True)
        vault.snapshot("e1", durable=True)
    assert len([w for w in caught if "cannot compare" in str(w.message)]) == 1
    assert [i.name for i in vault.snapshots()] == ["e0", "e1"]


def test_rank_must_be_an_int(tmp_path: Path) -> None:
    """rank="1" is a clear error, not a TypeError from deep inside."""
    with pytest.raises(rngvault.RngVaultError, match="rank must be an int, not str '1'"):
        Vault(tmp_path, run="a/b", rank="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"CUBLAS_WORKSPACE_CONFIG": "; rm -rf /"}, "not one CUDA documents"),
        ({"CUBLAS_WORKSPACE_CONFIG": 5}, "not one CUDA documents"),
        ({"cudnn.benchmark": "yes", "cudnn.deterministic": True}, "not true/false"),
        ({"deterministic_algorithms": 2**70}, "not true/false"),
        ({"deterministic_warn_only": "no", "deterministic_algorithms": True}, "not true/false"),
        ({"PYTHONHASHSEED": "seven"}, "not a valid value"),
    ],
)
def test_hostile_recorded_flags_become_notes_after_an_exact_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: dict[str, Any], needle: str
) -> None:
    """apply_flags with recorded values no flag can take restores every generator, sets
    nothing, and says what it left alone; it never raises after generators were touched."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    benchmark = torch.backends.cudnn.benchmark
    vault, aug, snap = _store_with(tmp_path, "hostile")
    environment = dict(snap.environment, flags=flags)
    hostile = dataclasses.replace(snap, environment=environment)
    vault.store.put("alice/exp", "hostile2", rngvault.encode(hostile), hostile)
    expected = _draws(aug)
    report = vault.restore("hostile2", apply_flags=True)
    assert _draws(aug) == expected
    assert report.ok and "augment" in report.restored
    assert any(needle in note for note in report.notes), report.notes
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.backends.cudnn.benchmark is benchmark


# -- the same snapshot taken again; restores after a refused put ----------------------------


def _seeded_run(store: Path, *, loss: float = 0.5) -> rngvault.Snapshot:
    """A run seeded the same way each time, in a Vault of its own: the same states."""
    with warnings.catch_warnings():  # PYTHONHASHSEED: not what this test is about
        warnings.simplefilter("ignore", rngvault.ReproducibilityWarning)
        rngvault.seed_everything(11)
    vault = Vault(store, run="alice/again", on_error="raise")
    vault.track(np.random.default_rng(0), "augment")
    taken = vault.snapshot("epoch0", epoch=0, metrics={"loss": loss}, durable=True)
    vault.close()
    return taken


def test_taking_the_same_snapshot_again_is_not_a_conflict(tmp_path: Path) -> None:
    """A rerun from the same seed: same states and user metadata, another `created` and
    environment: already stored, the stored bytes kept; other metrics: a conflict."""
    first = _seeded_run(tmp_path)
    stored = LocalStore(tmp_path).get("alice/again", "epoch0")
    again = _seeded_run(tmp_path)  # on_error="raise": a conflict would raise here
    assert again.created != first.created and again.digest == first.digest
    assert LocalStore(tmp_path).get("alice/again", "epoch0") == stored
    with pytest.raises(rngvault.ConflictError, match="other states or metadata"):
        _seeded_run(tmp_path, loss=0.25)


def test_same_snapshot_compares_states_and_user_metadata_only() -> None:
    """The rule: digest and step/epoch/tags/metrics/rank/world_size; not created,
    environment or probes; metric types exact, NaN equal to NaN."""
    from rngvault._identity import same_snapshot

    base = rngvault.capture({"g": random.Random(1)}, include_globals=False)
    nan = dataclasses.replace(base, metadata=rngvault.Metadata(metrics={"x": float("nan")}))
    other_env = dataclasses.replace(base, created=1.0, environment={"numpy": "0"}, probes={"g": 1})
    assert same_snapshot(base, other_env)
    assert same_snapshot(nan, dataclasses.replace(nan, created=2.0))
    for change in (
        rngvault.Metadata(step=1),
        rngvault.Metadata(tags=("a",)),
        rngvault.Metadata(world_size=2),
        rngvault.Metadata(metrics={"x": 1}),
    ):
        assert not same_snapshot(base, dataclasses.replace(base, metadata=change))
    one = dataclasses.replace(base, metadata=rngvault.Metadata(metrics={"x": 1}))
    assert not same_snapshot(
        one, dataclasses.replace(base, metadata=rngvault.Metadata(metrics={"x": 1.0}))
    )
    moved = rngvault.capture({"g": random.Random(2)}, include_globals=False)
    assert not same_snapshot(base, moved)


def test_restore_right_after_a_refused_put_raises(tmp_path: Path) -> None:
    """This Vault's snapshot of a name was refused (the name holds other content): restore
    of that name raises ConflictError saying so and touches nothing; the stored one can
    still be restored by its reference."""
    other = Vault(tmp_path, run="alice/exp")
    other.snapshot("epoch0", durable=True)
    stored_ref = other.get("epoch0").ref
    other.close()
    random.random()  # this process's states differ from the stored ones
    vault = Vault(tmp_path, run="alice/exp")
    with pytest.warns(rngvault.StoreWarning, match="other states or metadata"):
        vault.snapshot("epoch0")
        before = random.getstate()
        with pytest.raises(rngvault.ConflictError, match="holds other content .* nothing was"):
            vault.restore("epoch0")
    assert random.getstate() == before
    assert vault.restore(stored_ref).ok  # explicitly, by reference
    vault.close()


# -- snapshot.ref and durable= ----------------------------------------------------------------


def test_ref_is_known_at_once_without_encoding_on_the_training_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """snapshot().ref names the run, the name and the digest the store then holds; the
    snapshot() call itself neither encodes nor digests the states."""
    import rngvault._snapshot as snapshot_module
    import rngvault._vault as vault_module

    store = BlockingStore(tmp_path)  # the writer stays busy: nothing is filled in for us
    vault = Vault(store, run="alice/exp")
    vault.track(np.random.default_rng(1), "augment")
    calls: list[str] = []
    for module, attr in ((snapshot_module, "states_digest"), (vault_module, "encode_with_digest")):
        real = getattr(module, attr)

        def spy(*args: Any, _real: Any = real, _attr: str = attr) -> Any:
            calls.append(f"{_attr} on {threading.current_thread().name}")
            return _real(*args)

        monkeypatch.setattr(module, attr, spy)
    vault.snapshot("warm")  # the writer takes this one and waits in put
    assert store.entered.wait(10)
    calls.clear()
    taken = vault.snapshot("s0")
    here = threading.current_thread().name
    assert [c for c in calls if c.endswith(here)] == []  # nothing encoded on this thread
    ref = taken.ref
    assert ref is not None and (ref.run, ref.name, ref.rank) == ("alice/exp", "s0", 0)
    store.release.set()
    vault.flush()
    assert (
        ref.digest == vault.get("s0").digest == rngvault.decode(store.get("alice/exp", "s0")).digest
    )
    assert vault.restore(ref).ok
    vault.close()


def test_durable_with_the_server_away_means_kept_in_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """durable=True with a server that does not answer returns once the snapshot is
    fsynced in the spool (not on the server): its ref is set, flush() is False."""
    import httpx

    from rngvault.stores.http import HttpStore, SpoolWarning
    from rngvault.stores.spool import Spool

    def away(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    url = "http://127.0.0.1:9"
    store = HttpStore(
        url, transport=httpx.MockTransport(away), spool=Spool(url, tmp_path / "spool")
    )
    with pytest.warns(rngvault.StoreWarning, match="does not answer"):
        vault = Vault(store, run="alice/exp", on_error="raise")
    with pytest.warns(SpoolWarning, match="snapshots are kept in"):
        taken = vault.snapshot("s0", durable=True)
    [kept] = store.spool.entries()
    assert (kept.run, kept.name) == ("alice/exp", "s0")
    assert taken.ref is not None and rngvault.decode(kept.data).digest == taken.ref.digest
    assert vault.flush(timeout=5) is False
    vault.close()


# -- the token is checked once, at the start ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "said"),
    [(401, "refused the token"), (403, "refused the token"), (None, "does not answer")],
    ids=["401", "403", "away"],
)
def test_a_vault_on_a_server_checks_the_token_once_at_start(
    tmp_path: Path, status: int | None, said: str
) -> None:
    """A refused token or a server that is away is one warning at Vault() saying what to
    do; never an error; one request."""
    import httpx

    from rngvault.stores.http import HttpStore
    from rngvault.stores.spool import Spool

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        if status is None:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status, json={"error": "unauthorized", "detail": "unknown token"})

    url = "http://127.0.0.1:9"
    store = HttpStore(
        url, token="garbage", transport=httpx.MockTransport(answer), spool=Spool(url, tmp_path)
    )
    with pytest.warns(rngvault.StoreWarning, match=said) as caught:
        Vault(store, run="alice/exp")
    assert len(caught) == 1
    if status is not None:
        assert "set RNGVAULT_TOKEN or pass token=" in str(caught[0].message)
    assert seen == ["GET /v1/runs?limit=1&namespace=alice"]


def test_track_and_diff_have_real_types() -> None:
    """track returns the type it is given (a TypeVar); diff returns a DiffReport."""
    import typing

    from rngvault._diff import DiffReport

    track = typing.get_type_hints(Vault.track)
    assert isinstance(track["obj"], typing.TypeVar) and track["return"] is track["obj"]
    assert typing.get_type_hints(Vault.diff)["return"] is DiffReport


class _BatchingStore(LocalStore):
    """A local store whose first put_many waits on ``gate`` (so that snapshots queue up
    behind it) and that records the names each put_many call received."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def put_many(self, items: Any, *, durable: bool = True) -> list[Any]:
        self.batches.append([name for _run, name, _data, _snap in items])
        if len(self.batches) == 1:
            self.gate.wait(10)
        return super().put_many(items, durable=durable)


def test_queued_snapshots_are_stored_in_one_put_many_each_with_its_own_outcome(
    tmp_path: Path,
) -> None:
    store = _BatchingStore(tmp_path / "store")
    other = Vault(LocalStore(tmp_path / "store"), run="alice/exp", track_globals=False)
    other.track(np.random.default_rng(99), "augment")
    other.snapshot("s2", durable=True)  # "s2" is taken: this Vault's s2 will conflict
    vault = Vault(store, run="alice/exp", track_globals=False, on_error="raise")
    aug = vault.track(np.random.default_rng(1), "augment")
    taken = []
    for i in range(4):
        aug.random()
        taken.append(vault.snapshot(f"s{i}", step=i))
    store.gate.set()
    with pytest.raises(rngvault.ConflictError, match="s2"):
        vault.flush()
    assert store.batches == [["s0"], ["s1", "s2", "s3"]]
    for i in (0, 1, 3):
        assert vault.get(f"s{i}").digest == taken[i].ref.digest
    with pytest.raises(rngvault.ConflictError, match="its put was refused"):
        vault.restore("s2")
    vault.close()
    other.close()


def test_probes_are_computed_again_only_for_states_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rngvault import _probes

    probed: list[list[str]] = []
    compute = _probes.compute

    def counting(states: Any, devices: Any = None) -> Any:
        probed.append(sorted(states))
        return compute(states, devices)

    monkeypatch.setattr(_probes, "compute", counting)
    vault = Vault(tmp_path / "store", run="alice/exp", track_globals=False)
    still = vault.track(np.random.RandomState(5), "still")
    moving = vault.track(np.random.default_rng(6), "moving")
    for i in range(3):
        moving.random()
        vault.snapshot(f"s{i}", durable=True)
    still.random_sample()
    vault.snapshot("s3", durable=True)
    assert probed == [["moving", "still"], ["moving"], ["moving"], ["still"]]
    for i in range(4):  # every stored probe is the one computed from that state
        snap = vault.get(f"s{i}")
        assert {g: list(v) for g, v in snap.probes.items()} == compute(snap.states)
        assert all(check == "ok" for check in vault.verify(f"s{i}").values())
    vault.close()
