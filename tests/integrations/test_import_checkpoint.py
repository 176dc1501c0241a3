"""import_checkpoint and `rngvault import-checkpoint`: the RNG states frameworks' checkpoints
hold become snapshots that restore what the framework's own resume restores.

accelerate, the Trainer and Lightning write their files here with their own save functions.
Composer (mosaicml) cannot be installed next to this torch, so its checkpoints are written
with plain ``torch.save`` of exactly the structure Composer's ``_save_checkpoint`` writes
(``{'state': State.state_dict(), 'rng': reproducibility.get_rng_state()}``), and its restore
is the three calls of ``reproducibility.load_rng_state``. CUDA states are written by hand in
the layouts the frameworks use on GPU machines (this machine has none): 16-byte ByteTensors.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import random
import shutil
import struct
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault import cli

torch = pytest.importorskip("torch")
from rngvault.integrations import _import  # noqa: E402  (needs torch)
from rngvault.integrations._import import (  # noqa: E402
    CheckpointError,
    UnsafeCheckpointError,
    import_checkpoint,
)

Draws = tuple[Any, ...]


def draws() -> Draws:
    """What the process-wide generators give next, cached normals included."""
    return (
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.random_sample(3).tolist(),
        float(np.random.standard_normal()),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    )


def seed(n: int) -> None:
    random.seed(n)
    np.random.seed(n + 1)
    torch.manual_seed(n + 2)
    draws()  # mid-stream, with a normal cached in numpy and python


def restore_imported(snapshot: rngvault.Snapshot) -> None:
    report = rngvault.restore(snapshot)
    assert {"python.global", "numpy.global", "torch.cpu"} <= set(report.restored)


def assert_same_as_framework(
    restore_framework: Callable[[], None], snapshot: rngvault.Snapshot
) -> None:
    """From a disturbed state: the framework's own restore and rngvault's restore of the
    imported snapshot give the same draws (and the disturbed ones differ)."""
    seed(1234)
    disturbed = draws()
    restore_framework()
    expected = draws()
    seed(4321)
    restore_imported(snapshot)
    assert draws() == expected
    assert disturbed != expected


def cuda_state(seed_: int, offset: int) -> Any:
    """A CUDA generator state as torch.cuda.get_rng_state() returns it (torch >= 2.1)."""
    return torch.frombuffer(bytearray(struct.pack("<QQ", seed_, offset)), dtype=torch.uint8)


def cuda_fields(snapshot: rngvault.Snapshot, name: str) -> tuple[int, int]:
    state = snapshot.states[name]
    assert state.family == "torch.cuda"
    seed_, offset = struct.unpack("<QQ", state.fields["state"])
    return seed_, offset


def load(path: Path) -> Any:
    """A framework's RNG file, read back as the framework itself reads it."""
    with torch.serialization.safe_globals(_import._allowlist()):
        return torch.load(path, weights_only=True)


# -- accelerate ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def accelerator() -> Any:
    accelerate = pytest.importorskip("accelerate")
    return accelerate.Accelerator(cpu=True)


def test_accelerate_imported_states_draw_what_load_state_restores(
    accelerator: Any, tmp_path: Path
) -> None:
    seed(7)
    accelerator.save_state(str(tmp_path))
    [snapshot] = import_checkpoint("accelerate", tmp_path)
    assert set(snapshot.states) == {"python.global", "numpy.global", "torch.cpu"}
    assert (snapshot.metadata.rank, snapshot.metadata.world_size) == (0, 1)
    assert snapshot.metadata.tags == ("imported:accelerate",)
    assert snapshot.created == (tmp_path / "random_states_0.pkl").stat().st_mtime
    assert_same_as_framework(lambda: accelerator.load_state(str(tmp_path)), snapshot)
    # one of the files, named directly, is the same rank
    [again] = import_checkpoint("accelerate", tmp_path / "random_states_0.pkl")
    assert again.digest == snapshot.digest


def test_accelerate_ranks_and_cuda_states_import_without_a_gpu(
    accelerator: Any, tmp_path: Path
) -> None:
    """Two processes on a two-GPU machine: random_states_{0,1}.pkl, each with
    torch_cuda_manual_seed = get_rng_state_all() (one state per device)."""
    seed(11)
    accelerator.save_state(str(tmp_path))
    states = load(tmp_path / "random_states_0.pkl")
    for rank in (0, 1):
        seed(20 + rank)
        states.update(
            random_state=random.getstate(),
            numpy_random_seed=np.random.get_state(),
            torch_manual_seed=torch.get_rng_state(),
            torch_cuda_manual_seed=[cuda_state(100 + rank, 8), cuda_state(200 + rank, 40)],
        )
        torch.save(states, tmp_path / f"random_states_{rank}.pkl")
    snapshots = import_checkpoint("accelerate", tmp_path)
    assert [(s.metadata.rank, s.metadata.world_size) for s in snapshots] == [(0, 2), (1, 2)]
    for rank, snapshot in enumerate(snapshots):
        assert list(snapshot.states) == [
            "python.global",
            "numpy.global",
            "torch.cpu",
            "torch.cuda:0",
            "torch.cuda:1",
        ]
        assert cuda_fields(snapshot, "torch.cuda:0") == (100 + rank, 8)
        assert cuda_fields(snapshot, "torch.cuda:1") == (200 + rank, 40)
        # each rank's CPU-side states are its own
        seed(99)
        rngvault.restore(snapshot)  # the CUDA states are skipped here: no GPU
        got = draws()
        seed(20 + rank)
        assert got == draws()
    # a snapshot that holds them encodes and decodes (the format checks them too)
    assert rngvault.decode(rngvault.encode(snapshots[1])).digest == snapshots[1].digest


# -- transformers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    transformers = pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("trainer")
    args = transformers.TrainingArguments(output_dir=str(out), use_cpu=True, report_to=[])
    return transformers.Trainer(model=torch.nn.Linear(2, 1), args=args)


def test_transformers_imported_states_draw_what_the_trainer_restores(
    trainer: Any, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint-3"
    seed(8)
    trainer._save_rng_state(str(checkpoint))  # what Trainer._save_checkpoint calls
    trainer.state.global_step, trainer.state.epoch = 3, 1.0
    trainer.state.save_to_json(str(checkpoint / "trainer_state.json"))
    [snapshot] = import_checkpoint("transformers", checkpoint)
    assert set(snapshot.states) == {"python.global", "numpy.global", "torch.cpu"}
    assert (snapshot.metadata.step, snapshot.metadata.epoch) == (3, 1)
    assert (snapshot.metadata.rank, snapshot.metadata.world_size) == (0, 1)
    assert_same_as_framework(lambda: trainer._load_rng_state(str(checkpoint)), snapshot)


def test_transformers_cuda_layouts(trainer: Any, tmp_path: Path) -> None:
    """Outside distributed runs the Trainer saves one CUDA state (the current device,
    cuda:0); in distributed runs rng_state_{i}.pth with get_rng_state_all()."""
    single = tmp_path / "single"
    seed(9)
    trainer._save_rng_state(str(single))
    states = load(single / "rng_state.pth")
    torch.save({**states, "cuda": cuda_state(5, 12)}, single / "rng_state.pth")
    [snapshot] = import_checkpoint("transformers", single)
    assert cuda_fields(snapshot, "torch.cuda:0") == (5, 12)

    distributed = tmp_path / "distributed"
    distributed.mkdir()
    for rank in range(3):
        cuda = [cuda_state(10 * rank + d, 4 * d) for d in range(2)]
        torch.save({**states, "cuda": cuda}, distributed / f"rng_state_{rank}.pth")
    snapshots = import_checkpoint("transformers", distributed)
    assert [(s.metadata.rank, s.metadata.world_size) for s in snapshots] == [(0, 3), (1, 3), (2, 3)]
    assert [cuda_fields(s, "torch.cuda:1") for s in snapshots] == [(1, 4), (11, 4), (21, 4)]
    # one file of a distributed checkpoint: its rank, the folder's world size
    [two] = import_checkpoint("transformers", distributed / "rng_state_2.pth")
    assert (two.metadata.rank, two.metadata.world_size, two.digest) == (2, 3, snapshots[2].digest)


def test_transformers_other_devices_are_left_out_loudly(trainer: Any, tmp_path: Path) -> None:
    seed(10)
    trainer._save_rng_state(str(tmp_path))
    states = load(tmp_path / "rng_state.pth")
    torch.save({**states, "npu": torch.zeros(16, dtype=torch.uint8)}, tmp_path / "rng_state.pth")
    with pytest.warns(rngvault.RngVaultWarning, match=r"'npu' not imported"):
        [snapshot] = import_checkpoint("transformers", tmp_path)
    assert set(snapshot.states) == {"python.global", "numpy.global", "torch.cpu"}


# -- Lightning ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lightning_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real fit; one checkpoint as Lightning writes it, one where a callback stored
    Lightning's own _collect_rng_states() in on_save_checkpoint."""
    lightning = pytest.importorskip("lightning")
    from lightning.fabric.utilities.seed import _collect_rng_states

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, _index: int) -> Any:
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class KeepRng(lightning.Callback):
        enabled = False

        def on_save_checkpoint(self, trainer: Any, module: Any, checkpoint: dict) -> None:
            if self.enabled:
                checkpoint["rng_states"] = _collect_rng_states()

    keep = KeepRng()
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[keep],
    )
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging
        trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=4))
    out = tmp_path_factory.mktemp("lightning")
    trainer.save_checkpoint(out / "plain.ckpt")
    seed(12)
    keep.enabled = True
    trainer.save_checkpoint(out / "with-rng.ckpt")
    return {"plain": out / "plain.ckpt", "with-rng": out / "with-rng.ckpt"}


def test_lightning_checkpoints_hold_no_rng_state(lightning_checkpoints: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"holds no RNG state: Lightning saves none"):
        import_checkpoint("lightning", lightning_checkpoints["plain"])


def test_lightning_rng_states_a_callback_saved_import(
    lightning_checkpoints: dict[str, Path],
) -> None:
    from lightning.fabric.utilities.seed import _set_rng_states

    path = lightning_checkpoints["with-rng"]
    [snapshot] = import_checkpoint("lightning", path)
    saved = load(path)
    assert (snapshot.metadata.step, snapshot.metadata.epoch) == (
        saved["global_step"],
        saved["epoch"],
    )
    assert set(snapshot.states) == {"python.global", "numpy.global", "torch.cpu"}
    assert_same_as_framework(lambda: _set_rng_states(saved["rng_states"]), snapshot)


# -- Composer -------------------------------------------------------------------------------------


def composer_rank_states(n: int, cuda: bool) -> dict[str, Any]:
    """One rank's entry of reproducibility.get_rng_state()."""
    seed(n)
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.random.get_rng_state(),
    }
    if cuda:
        states["cuda"] = cuda_state(1000 + n, 4 * n)
    return states


def composer_checkpoint(ranks: int, *, cuda: bool = False, per_node: int = 1) -> dict[str, Any]:
    """What composer.utils.checkpoint._save_checkpoint torch.saves (State.state_dict()
    abridged to the entries that matter here, with its timedelta timestamps)."""
    wct = datetime.timedelta(seconds=12, microseconds=5)
    return {
        "state": {
            "model": {"layer.weight": torch.ones(2, 2)},
            "timestamp": {"epoch": 2, "batch": 40, "sample": 640, "total_wct": wct},
            "rank_zero_seed": 17,
            "run_name": "gpt-tiny",
            "metadata": {
                "composer_env_info": {"num_gpus_per_node": per_node, "num_gpus": ranks},
                "world_size": ranks,
                "device": "gpu" if cuda else "cpu",
            },
        },
        "rng": [composer_rank_states(30 + rank, cuda) for rank in range(ranks)],
    }


def composer_restore(states: dict[str, Any]) -> None:
    """reproducibility.load_rng_state for one rank, on a machine without CUDA."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])


def test_composer_imported_states_draw_what_load_rng_state_restores(tmp_path: Path) -> None:
    checkpoint = composer_checkpoint(2)
    path = tmp_path / "ep2-ba40-rank0.pt"
    torch.save(checkpoint, path)
    snapshots = import_checkpoint("composer", path)
    assert [(s.metadata.rank, s.metadata.world_size) for s in snapshots] == [(0, 2), (1, 2)]
    assert (snapshots[0].metadata.step, snapshots[0].metadata.epoch) == (40, 2)
    for rank, snapshot in enumerate(snapshots):
        assert_same_as_framework(lambda r=rank: composer_restore(checkpoint["rng"][r]), snapshot)


def test_composer_tar_folder_and_cuda_devices(tmp_path: Path) -> None:
    """A .tar.gz holding composer_states.pt (as _write_checkpoint_file writes it), the
    folder it extracts to, and each rank's CUDA state on its local device."""
    checkpoint = composer_checkpoint(4, cuda=True, per_node=2)
    folder = tmp_path / "extracted"
    folder.mkdir()
    torch.save(checkpoint, folder / "composer_states.pt")
    tarball = tmp_path / "ep2-ba40.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="")
    from_tar = import_checkpoint("composer", tarball)
    from_folder = import_checkpoint("composer", folder)
    assert [s.digest for s in from_tar] == [s.digest for s in from_folder]
    devices = [[n for n in s.states if n.startswith("torch.cuda")] for s in from_tar]
    assert devices == [["torch.cuda:0"], ["torch.cuda:1"], ["torch.cuda:0"], ["torch.cuda:1"]]
    assert [cuda_fields(s, d[0]) for s, d in zip(from_tar, devices, strict=True)] == [
        (1030, 120),
        (1031, 124),
        (1032, 128),
        (1033, 132),
    ]


def test_composer_checkpoint_without_rng(tmp_path: Path) -> None:
    checkpoint = composer_checkpoint(1)
    del checkpoint["rng"]  # save_checkpoint(weights_only=True), or ignore_keys=["rng"]
    torch.save(checkpoint, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights\.pt: this Composer checkpoint holds no"):
        import_checkpoint("composer", tmp_path / "weights.pt")


# -- safety and bad input -------------------------------------------------------------------------

MARKER = "rngvault-import-ran-code"


class RunsCode:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


FILE_OF_KIND = {
    "accelerate": "random_states_0.pkl",
    "transformers": "rng_state.pth",
    "lightning": "last.ckpt",
    "composer": "ep1-ba2-rank0.pt",
}


@pytest.mark.parametrize("kind", sorted(FILE_OF_KIND))
def test_a_pickle_that_would_run_code_is_refused(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    path = tmp_path / FILE_OF_KIND[kind]
    torch.save({"python": RunsCode(marker), "rng": [RunsCode(marker)]}, path)
    with pytest.raises(UnsafeCheckpointError) as refused:
        import_checkpoint(kind, path)
    assert str(path) in str(refused.value)
    assert refused.value.globals == [f"{os.system.__module__}.system"]
    assert f"needs {os.system.__module__}.system" in str(refused.value)
    assert not marker.exists()


def test_a_plain_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    path = tmp_path / "random_states_0.pkl"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps({"random_state": RunsCode(marker)}, protocol=protocol))
        with pytest.raises(CheckpointError, match=r"random_states_0\.pkl: "):
            import_checkpoint("accelerate", path)
    assert not marker.exists()


def test_missing_paths_and_unknown_kinds(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nowhere: no such file or folder"):
        import_checkpoint("accelerate", tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"no rng_state_N\.pth or rng_state\.pth here"):
        import_checkpoint("transformers", tmp_path)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint kind 'megatron'"):
        import_checkpoint("megatron", tmp_path)
    with pytest.raises(CheckpointError, match=r"a folder; a Lightning checkpoint is one"):
        import_checkpoint("lightning", tmp_path)


def test_a_gap_in_the_ranks_is_named(accelerator: Any, tmp_path: Path) -> None:
    accelerator.save_state(str(tmp_path))
    shutil.copy(tmp_path / "random_states_0.pkl", tmp_path / "random_states_2.pkl")
    with pytest.raises(CheckpointError, match=r"ranks 1 have no random_states_N\.pkl file"):
        import_checkpoint("accelerate", tmp_path)


def test_a_truncated_file_is_an_error(accelerator: Any, tmp_path: Path) -> None:
    accelerator.save_state(str(tmp_path))
    path = tmp_path / "random_states_0.pkl"
    data = path.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=r"random_states_0\.pkl: cannot be read"):
            import_checkpoint("accelerate", path)


def _numpy_state(pos: int) -> tuple[Any, ...]:
    name, key, _pos, has_gauss, gauss = np.random.get_state()
    return (name, key, pos, has_gauss, gauss)


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (["not", "a", "dict"], ["expected accelerate's states", "found a list"]),
        ({"random_state": 1}, ["lacks 'numpy_random_seed', 'torch_manual_seed'"]),
        (
            {"random_state": (3, (1,) * 10, None), "numpy_random_seed": 0, "torch_manual_seed": 0},
            ["entry 'random_state' (python.global)", "625 integers"],
        ),
        (
            # NumPy would take pos 700 and read past its key: refused before NumPy sees it
            {
                "random_state": random.getstate(),
                "numpy_random_seed": _numpy_state(700),
                "torch_manual_seed": torch.get_rng_state(),
            },
            ["entry 'numpy_random_seed' (numpy.global)", "'pos'", "700"],
        ),
        (
            {
                "random_state": random.getstate(),
                "numpy_random_seed": _numpy_state(3),
                "torch_manual_seed": torch.zeros(5056, dtype=torch.uint8),
            },
            ["entry 'torch_manual_seed' (torch.cpu)", "seeded"],
        ),
        (
            {
                "random_state": random.getstate(),
                "numpy_random_seed": _numpy_state(3),
                "torch_manual_seed": torch.get_rng_state(),
                "torch_cuda_manual_seed": [cuda_state(1, 6)],
            },
            ["entry 'torch_cuda_manual_seed[0]' (torch.cuda:0)", "multiple of 4"],
        ),
        (
            {
                "random_state": random.getstate(),
                "numpy_random_seed": _numpy_state(3),
                "torch_manual_seed": torch.get_rng_state(),
                "torch_cuda_manual_seed": [cuda_state(1, 4)] * 5000,
            },
            ["'torch_cuda_manual_seed' lists 5000 CUDA states", "at most 1024"],
        ),
    ],
    ids=[
        "list",
        "missing-entries",
        "short-python",
        "numpy-pos",
        "unseeded-torch",
        "cuda-offset",
        "cuda-too-many",
    ],
)
def test_the_right_name_with_another_structure(
    content: Any, needles: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "random_states_0.pkl"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as error:
        import_checkpoint("accelerate", tmp_path)
    message = str(error.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_the_cli_and_the_library_know_the_same_kinds() -> None:
    from rngvault.cli import _integrations

    assert _integrations.KINDS == _import.KINDS


# -- the command ----------------------------------------------------------------------------------


@pytest.fixture
def rv(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str, str]]:
    """Run `rngvault` in-process: (status, stdout, stderr), with a private home."""
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "home"))
    for name in ("RNGVAULT_SPOOL", "RNGVAULT_STORE", "RNGVAULT_URL", "RNGVAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        status = cli.main([str(arg) for arg in argv])
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


def test_cli_stores_one_snapshot_per_rank(
    rv: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    path = tmp_path / "ep2-ba40-rank0.pt"
    torch.save(composer_checkpoint(2, cuda=True, per_node=2), path)
    store = tmp_path / "store"
    status, out, err = rv("import-checkpoint", "composer", str(path), "bob/gpt/ep2", "--url", store)
    assert status == 0, err
    assert "0/2" in out and "1/2" in out
    assert "python.global, numpy.global, torch.cpu, torch.cuda:0" in out
    assert "torch.cuda:1" in out and out.count("stored") == 2
    assert f"imported 2 rank(s) of composer checkpoint {path} as bob/gpt/ep2" in err
    expected = import_checkpoint("composer", path)
    local = rngvault.open_store(str(store))
    for rank in (0, 1):
        stored = rngvault.decode(local.get("bob/gpt", "ep2", rank))
        assert stored.digest == expected[rank].digest
        assert stored.metadata == expected[rank].metadata
    # the same again: identical, accepted
    status, out, _ = rv(
        "import-checkpoint", "composer", str(path), "bob/gpt", "ep2", "--url", store
    )
    assert status == 0 and out.count("already stored (identical)") == 2
    status, out, _ = rv(
        "import-checkpoint", "composer", str(path), "bob/gpt/ep2", "--json", "--url", store
    )
    assert status == 0
    assert [
        (r["rank"], r["world_size"], r["generators"][-1], r["digest"], r["new"])
        for r in json.loads(out)
    ] == [
        (s.metadata.rank, 2, "torch.cuda:" + str(s.metadata.rank), s.digest, False)
        for s in expected
    ]


def test_cli_errors(rv: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    marker = tmp_path / MARKER
    torch.save({"python": RunsCode(marker)}, tmp_path / "rng_state.pth")
    status, out, err = rv(
        "import-checkpoint", "transformers", str(tmp_path), "a/b/c", "--url", store
    )
    assert status == 1 and out == ""
    assert err.startswith("rngvault: error: ") and err.count("\n") == 1
    assert "refused: loading it needs" in err and not marker.exists()

    status, _, err = rv("import-checkpoint", "accelerate", str(tmp_path / "no"), "a/b/c")
    assert status == 1 and "no such file or folder" in err

    status, _, err = rv("import-checkpoint", "megatron", str(tmp_path), "a/b/c")
    assert status == 2 and "'megatron' is not one of" in err
    status, _, err = rv("import-checkpoint", "accelerate", str(tmp_path), "a/b")
    assert status == 2 and "a snapshot name must follow the run a/b" in err


def test_cli_warns_in_one_line_for_entries_left_out(
    rv: Callable[..., tuple[int, str, str]], trainer: Any, tmp_path: Path
) -> None:
    trainer._save_rng_state(str(tmp_path))
    states = load(tmp_path / "rng_state.pth")
    torch.save({**states, "xla": 5}, tmp_path / "rng_state.pth")
    status, _, err = rv(
        "import-checkpoint", "transformers", str(tmp_path), "a/b/c", "--url", tmp_path / "s"
    )
    assert status == 0
    assert "rngvault: warning: " in err and "'xla' not imported" in err
