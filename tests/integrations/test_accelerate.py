"""rngvault.integrations.accelerate: save_state carries a snapshot reference, load_state
restores it after accelerate's own states, and a resumed run is bit-identical.

The resume tests run tests/integrations/accelerate_train.py in fresh interpreters (one or
two processes); the rest use a real ``Accelerator(cpu=True)`` in this process.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rngvault
from rngvault import MissingExtraError, RestoreError, RngVaultError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("accelerate_train.py")
RUN = "tests/accelerate"  # the script's run


def test_missing_accelerate_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without accelerate, importing the integration says which extra to install."""
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate raises ImportError
    monkeypatch.setitem(sys.modules, "accelerate.data_loader", None)
    monkeypatch.delitem(sys.modules, "rngvault.integrations.accelerate", raising=False)
    with pytest.raises(MissingExtraError, match=r"rngvault\[accelerate\]") as caught:
        importlib.import_module("rngvault.integrations.accelerate")
    assert isinstance(caught.value, ImportError)


@pytest.fixture
def acc() -> Iterator[Any]:
    """The accelerate module (skipped without it); accelerate's shared state is reset after."""
    pytest.importorskip("torch", reason="torch is not installed")
    accelerate = pytest.importorskip("accelerate", reason="accelerate is not installed")
    from accelerate.state import AcceleratorState, GradientState

    yield accelerate
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


# -- fresh processes -------------------------------------------------------------------------


def _train(
    mode: str, store: Path, checkpoint: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(store), str(checkpoint), *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _results(*processes: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Each process's JSON line; on a failure or a timeout, the others are killed too (a
    rank left alone would wait for its peer)."""
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-3000:]
            results.append(json.loads(out.splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def _pair(mode: str, store: Path, checkpoint: Path, port: int) -> list[dict[str, Any]]:
    """The script under two CPU processes (gloo), with no DataLoader generator of its own."""
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(port)
    processes = [
        _train(
            mode,
            store,
            checkpoint,
            "--no-loader-generator",
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in (0, 1)
    ]
    return _results(*processes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_resumed_epochs_are_bit_identical_and_not_without_track(acc: Any, tmp_path: Path) -> None:
    """save_state after epoch 1, stop; load_state in a fresh process: epochs 2 and 3 give the
    uninterrupted run's losses and sample order bit for bit. The same checkpoint without
    rngvault's entry, resumed without track, does not: accelerate's checkpoint holds neither
    the DataLoader's generator nor the NumPy Generator."""
    store, checkpoint = tmp_path / "store", tmp_path / "checkpoint"
    plain, saved = _results(_train("plain", store, checkpoint), _train("save", store, checkpoint))
    untracked_checkpoint = tmp_path / "untracked"
    shutil.copytree(checkpoint, untracked_checkpoint)
    (untracked_checkpoint / "custom_checkpoint_0.pkl").unlink()
    resumed, untracked = _results(
        _train("resume", store, checkpoint),
        _train("resume-untracked", store, untracked_checkpoint),
    )

    assert saved["losses"] == plain["losses"][:1]  # tracking draws nothing
    assert saved["saved"].startswith(f"{RUN}/save0@")
    assert {"augment", "accelerate.loader0", "torch.cpu"} <= set(resumed["restored"])
    assert len(resumed["losses"]) == 2
    assert resumed["losses"] == plain["losses"][1:]
    assert resumed["orders"] == plain["orders"][1:]

    assert untracked["losses"] != plain["losses"][1:]
    # accelerate's checkpoint leaves the DataLoader's generator where the new process made
    # it: the second epoch repeats the first epoch's order.
    assert untracked["orders"][0] == plain["orders"][0] != plain["orders"][1]


def test_two_processes_resume_each_rank_exactly(acc: Any, tmp_path: Path) -> None:
    """Two CPU processes: accelerate makes the generator that orders the shards and keeps it
    in step across ranks; rngvault tracks it. Each rank's resumed epochs equal its own
    uninterrupted ones (the uninterrupted run saved after epoch 1 and went on)."""
    store, checkpoint = tmp_path / "store", tmp_path / "checkpoint"
    full = _pair("save-continue", store, checkpoint, _free_port())
    resumed = _pair("resume", store, checkpoint, _free_port())

    assert full[0]["saved"].startswith(f"{RUN}/save0@") and "#" not in full[0]["saved"]
    assert full[1]["saved"].startswith(f"{RUN}/save0@") and full[1]["saved"].endswith("#1")
    for rank in (0, 1):
        assert "accelerate.loader0.synchronized" in resumed[rank]["restored"]
        assert resumed[rank]["losses"] == full[rank]["losses"][1:]
        assert resumed[rank]["orders"] == full[rank]["orders"][1:]
    assert full[0]["orders"] != full[1]["orders"]  # the ranks saw different shards


# -- in this process ----------------------------------------------------------------------------


def _setup(accelerate: Any, *, generator: Any = None) -> tuple[Any, Any, Any]:
    """A fresh Accelerator with a tiny model, optimizer and shuffled DataLoader prepared."""
    import torch
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = accelerate.Accelerator(cpu=True)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.arange(8.0).reshape(4, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True, generator=generator)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    return accelerator, loader, model


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[rngvault.Vault]:
    with rngvault.Vault(tmp_path / "store", run="tests/unit") as v:
        yield v


def acc_track(accelerator: Any, vault: Any, **options: Any) -> Any:
    from rngvault.integrations.accelerate import track

    return track(accelerator, vault, **options)


def _draws() -> tuple[Any, ...]:
    import numpy as np
    import torch

    return (torch.rand(3).tolist(), np.random.random(3).tolist(), random.random())


def test_checkpoint_entry_is_one_reference_string(acc: Any, vault: Any, tmp_path: Path) -> None:
    """The custom checkpoint file holds {"rngvault": "<ref>"} and nothing else: it loads with
    torch.load(weights_only=True) and names the stored snapshot save0 by its digest."""
    import torch

    accelerator, _loader, _model = _setup(acc)
    tracker = acc_track(accelerator, vault)
    accelerator.save_state(tmp_path / "ckpt")

    entry = torch.load(tmp_path / "ckpt" / "custom_checkpoint_0.pkl", weights_only=True)
    stored = vault.get("save0")
    assert entry == {"rngvault": str(stored.ref)}
    assert rngvault.SnapshotRef.parse(entry["rngvault"]).digest == stored.digest
    assert tracker.saved == stored.ref


def test_rngvault_restores_after_accelerates_own_random_states(
    acc: Any, vault: Any, tmp_path: Path
) -> None:
    """load_state restores random_states_0.pkl first and the registered objects after, so
    rngvault's states are the ones left: with the pickle replaced by later states, the
    draws after load_state are still those that followed save_state."""
    accelerator, _loader, _model = _setup(acc)
    acc_track(accelerator, vault)
    accelerator.save_state(tmp_path / "ckpt")
    expected = _draws()
    accelerator.save_state(tmp_path / "later")  # accelerate's pickle of later states
    shutil.copy(tmp_path / "later" / "random_states_0.pkl", tmp_path / "ckpt")
    later = _draws()

    accelerator.load_state(tmp_path / "ckpt")
    assert _draws() == expected != later


def test_names_go_on_after_the_loaded_snapshot(acc: Any, vault: Any, tmp_path: Path) -> None:
    """Snapshots are save0, save1... by save iteration; a new accelerator that loads save1
    names its next snapshot save2, never reusing a name for other states."""
    accelerator, _loader, _model = _setup(acc)
    acc_track(accelerator, vault)
    accelerator.save_state(tmp_path / "a")
    accelerator.save_state(tmp_path / "b")
    assert [info.name for info in vault.snapshots()] == ["save0", "save1"]

    accelerator, _loader, _model = _setup(acc)
    tracker = acc_track(accelerator, vault)
    accelerator.load_state(tmp_path / "b")
    assert tracker.report is not None and tracker.report.ok
    accelerator.save_state(tmp_path / "c")
    assert tracker.saved is not None and tracker.saved.name == "save2"


def test_loader_generators_are_tracked_unless_already_or_disabled(
    acc: Any, vault: Any, tmp_path: Path
) -> None:
    """The DataLoader's own generator (one process) is tracked as accelerate.loader0 when a
    snapshot is taken; not again when the Vault tracks it already; not with loaders=False."""
    import torch

    generator = torch.Generator().manual_seed(3)
    accelerator, _loader, _model = _setup(acc, generator=generator)
    acc_track(accelerator, vault)
    accelerator.save_state(tmp_path / "a")
    assert vault.tracked["accelerate.loader0"] is generator

    vault.untrack("accelerate.loader0")
    vault.track(generator, "mine")
    accelerator.save_state(tmp_path / "b")
    assert "accelerate.loader0" not in vault.tracked

    accelerator, _loader, _model = _setup(acc, generator=generator)
    with rngvault.Vault(tmp_path / "store", run="tests/other") as other:
        acc_track(accelerator, other, loaders=False)
        accelerator.save_state(tmp_path / "c")
        assert generator not in other.tracked.values()


def test_a_partial_restore_warns(acc: Any, vault: Any, tmp_path: Path) -> None:
    """A generator the snapshot holds but this process does not track is named in a warning
    (and is an error with strict=True, before anything is touched)."""
    import numpy as np

    accelerator, _loader, _model = _setup(acc)
    vault.track(np.random.default_rng(0), "extra")
    tracker = acc_track(accelerator, vault)
    accelerator.save_state(tmp_path / "ckpt")
    vault.untrack("extra")

    with pytest.warns(rngvault.ReproducibilityWarning, match="extra"):
        accelerator.load_state(tmp_path / "ckpt")
    assert tracker.report is not None and tracker.report.skipped == ["extra"]

    tracker.strict = True
    with pytest.raises(RestoreError, match="extra"):
        accelerator.load_state(tmp_path / "ckpt")


def test_bad_arguments_are_clear_errors(acc: Any, vault: Any, tmp_path: Path) -> None:
    """track() names what is wrong; a Vault whose rank is not the accelerator's is refused."""
    accelerator, _loader, _model = _setup(acc)
    with pytest.raises(TypeError, match="accelerate.Accelerator"):
        acc_track(object(), vault)
    with pytest.raises(TypeError, match=r"rngvault\.Vault, not str"):
        acc_track(accelerator, "tests/unit")
    with pytest.raises(rngvault.InvalidNameError, match="bad name"):
        acc_track(accelerator, vault, prefix="bad name")
    with (
        rngvault.Vault(tmp_path / "store", run="tests/unit", rank=1, world_size=2) as other,
        pytest.raises(RngVaultError, match=r"rank 1 of 2 .* process 0 of 1"),
    ):
        acc_track(accelerator, other)
    assert accelerator._custom_objects == []  # nothing was registered


def test_entries_without_a_reference_are_refused(acc: Any, vault: Any) -> None:
    """An entry that is not rngvault's (objects registered in another order) is a
    RestoreError saying so, not a KeyError."""
    accelerator, _loader, _model = _setup(acc)
    tracker = acc_track(accelerator, vault)
    with pytest.raises(RestoreError, match="holds no snapshot reference"):
        tracker.load_state_dict({"step": 3})
    with pytest.raises(RestoreError, match="not a dict but a list"):
        tracker.load_state_dict([1, 2])
    with pytest.raises(rngvault.InvalidNameError, match="invalid snapshot reference"):
        tracker.load_state_dict({"rngvault": "not a reference"})


def test_an_entry_another_ranks_process_wrote(acc: Any, tmp_path: Path) -> None:
    """With save_on_each_node, a node's main process (rank 1 here) writes the entry its node
    reads: rank 2 checks that rank's snapshot against the entry's digest, then restores its
    own snapshot of the same name; an entry whose digest does not match is refused."""
    import types

    import numpy as np

    from rngvault.integrations.accelerate import VaultState

    entries, augments, expected = [], [], []
    for rank in range(3):
        accelerator = types.SimpleNamespace(process_index=rank, num_processes=3, save_iteration=0)
        with rngvault.Vault(tmp_path / "store", run="tests/ranks", rank=rank, world_size=3) as v:
            augment = v.track(np.random.default_rng(rank), "augment")
            state = VaultState(accelerator, v, prefix="save", strict=False, loaders=False)
            entries.append(state.state_dict())
            expected.append(augment.random(2).tolist())
            augments.append(augment)
    assert entries[1]["rngvault"].endswith("#1")

    accelerator = types.SimpleNamespace(process_index=2, num_processes=3, save_iteration=0)
    with rngvault.Vault(tmp_path / "store", run="tests/ranks", rank=2, world_size=3) as v:
        v.track(augments[2], "augment")
        state = VaultState(accelerator, v, prefix="save", strict=False, loaders=False)
        state.load_state_dict(entries[1])
        assert augments[2].random(2).tolist() == expected[2]

        ref0, ref1 = (rngvault.SnapshotRef.parse(e["rngvault"]) for e in entries[:2])
        forged = {"rngvault": str(dataclasses.replace(ref1, digest=ref0.digest))}
        augments[2].random(5)
        before = augments[2].bit_generator.state
        with pytest.raises(RestoreError, match="not the snapshot the checkpoint"):
            state.load_state_dict(forged)
        assert augments[2].bit_generator.state == before


def test_folder_saved_without_track(acc: Any, vault: Any, tmp_path: Path) -> None:
    """accelerate refuses to load a folder saved without track() into an accelerator that
    has it (it counts registered objects); load_state first, then track(), resumes from it,
    and the next save_state carries a reference."""
    import torch

    accelerator, _loader, _model = _setup(acc)
    accelerator.save_state(tmp_path / "old")

    accelerator, _loader, _model = _setup(acc)
    acc_track(accelerator, vault)
    with pytest.raises(RuntimeError, match="Number of custom checkpoints"):
        accelerator.load_state(tmp_path / "old")

    accelerator, _loader, _model = _setup(acc)
    accelerator.load_state(tmp_path / "old")
    tracker = acc_track(accelerator, vault)
    accelerator.save_state(tmp_path / "new")
    entry = torch.load(tmp_path / "new" / "custom_checkpoint_0.pkl", weights_only=True)
    assert tracker.saved is not None and entry == {"rngvault": str(tracker.saved)}
