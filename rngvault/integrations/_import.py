"""The RNG states that training frameworks' checkpoints already hold, as rngvault snapshots.

==================  =============================================================================
kind                what is read
==================  =============================================================================
``accelerate``      a folder ``Accelerator.save_state`` wrote: ``random_states_{i}.pkl``, one per
                    process (or one of those files)
``transformers``    a Trainer ``checkpoint-N`` folder: ``rng_state.pth``, or ``rng_state_{i}.pth``
                    per process (or one of those files); ``trainer_state.json`` for the step
``lightning``       a ``.ckpt`` file; Lightning saves no RNG state itself, so only a dict in the
                    layout of Lightning's own ``_collect_rng_states()`` that a callback or
                    ``on_save_checkpoint`` put into it is found
``composer``        a checkpoint file (``torch.save``, or a tar holding ``composer_states.pt``) or
                    a folder holding ``composer_states.pt``: its ``rng`` entry, one dict per rank
==================  =============================================================================

Each rank becomes one snapshot with the process-wide generators rngvault captures:
``python.global``, ``numpy.global``, ``torch.cpu`` and ``torch.cuda:N``.

These files are pickles. They are loaded with ``torch.load(weights_only=True)`` and an
allowlist of the few plain-value types they hold (NumPy arrays and dtypes, and
``datetime.timedelta`` in Composer's timestamps); a file that needs any other global is
refused (``UnsafeCheckpointError``) before anything in it is used. Every state is checked by
its family and set into a private generator of its kind (CUDA ones excepted) before it
becomes part of a snapshot.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import pickle
import random
import re
import stat
import tarfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rngvault._errors import (
    CheckpointError,
    MissingExtraError,
    StateError,
    UnsafeCheckpointError,
    warn,
)
from rngvault._format import MAX_STATES
from rngvault._seeding import ReproducibilityWarning
from rngvault._snapshot import Metadata, Snapshot, State
from rngvault.families import Fields, get_family

try:
    import torch
except ImportError:
    raise MissingExtraError("torch", "torch", "importing framework checkpoints") from None

__all__ = ["KINDS", "CheckpointError", "UnsafeCheckpointError", "import_checkpoint"]

KINDS = ("accelerate", "transformers", "lightning", "composer")

STATE_FILE_LIMIT = 16 * 2**20  # an RNG state file is ~20 KB; a larger one is not one


# -- safe loading -----------------------------------------------------------------------------


def _allowlist() -> list[Any]:
    """The globals RNG state files need beyond what ``weights_only`` allows by default: NumPy
    arrays (the legacy global state's key) and their dtypes, under NumPy 1's names too, and
    ``datetime.timedelta`` (Composer's timestamps). None of them runs code when unpickled."""
    # numpy._core since NumPy 2, numpy.core before; a file names the one that wrote it
    core = (np._core if hasattr(np, "_core") else np.core).multiarray
    allowed: list[Any] = [
        core._reconstruct,
        (core._reconstruct, "numpy.core.multiarray._reconstruct"),  # written by NumPy 1
        (core._reconstruct, "numpy._core.multiarray._reconstruct"),  # written by NumPy 2
        np.ndarray,
        np.dtype,
        datetime.timedelta,
    ]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25 may name the dtype's class
    if dtypes is not None:
        allowed.append(dtypes.UInt32DType)
    return allowed


def _refused(where: str, source: Path | BinaryIO) -> UnsafeCheckpointError:
    """The refusal for ``source``, naming every global it wants that is not allowed."""
    wanted: list[str] = []
    try:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        wanted = list(torch.serialization.get_unsafe_globals_in_checkpoint(source))
    except Exception:  # not a zip-format file: the load's own message names the first
        pass
    return UnsafeCheckpointError(where, wanted)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load(where: str, source: Path | BinaryIO, *, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and the allowlist, tensors on the CPU;
    ``mmap`` leaves a large checkpoint's tensors on disk. Every failure is a
    ``CheckpointError`` naming ``where``."""
    with warnings.catch_warnings():
        # torch's notes (pickle protocol, mmap); refusals and failures are raised below
        warnings.simplefilter("ignore")
        with torch.serialization.safe_globals(_allowlist()):
            try:
                return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
            except pickle.UnpicklingError as exc:
                text = str(exc)
                if "GLOBAL" in text:
                    refusal = _refused(where, source)
                    if not refusal.globals:
                        refusal = UnsafeCheckpointError(where, _GLOBAL.findall(text)[:1])
                    raise refusal from None
                reason = "it is not a file torch.save wrote, or uses pickle features a "
                reason += "weights-only load refuses"
                raise CheckpointError(f"{where}: cannot be read: {reason}") from None
            except Exception as exc:
                if mmap and "mmap" in str(exc):  # an old-format file: read it whole
                    return _load(where, source, mmap=False)
                raise CheckpointError(
                    f"{where}: cannot be read as a file torch.save wrote "
                    f"({type(exc).__name__}: {_line(exc)})"
                ) from None


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _regular(path: Path, what: str) -> os.stat_result:
    """The status of ``path``, which must be an existing regular file (not a FIFO...)."""
    try:
        status = path.stat()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {what}: {exc.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        raise CheckpointError(f"{path}: {what} must be a regular file")
    return status


def _load_file(path: Path, *, limit: int | None, mmap: bool = False) -> Any:
    status = _regular(path, "the checkpoint file")
    if limit is not None and status.st_size > limit:
        raise CheckpointError(
            f"{path}: {status.st_size} bytes is too large for an RNG state file "
            f"(at most {limit}); is it the right file?"
        )
    return _load(str(path), path, mmap=mmap)


# -- what a reader finds ----------------------------------------------------------------------


@dataclass
class _Rank:
    """One process's RNG entries, as a framework saved them.

    ``entries`` maps a global generator name to (the entry's name in the file, its value);
    ``unknown`` holds the names of entries rngvault has no family for.
    """

    rank: int
    where: str
    entries: dict[str, tuple[str, Any]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


@dataclass
class _Found:
    ranks: list[_Rank]
    world_size: int
    created: float
    step: int | None = None
    epoch: int | None = None


def _entry_map(value: Any, where: str, required: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CheckpointError(
            f"{where}: expected {what} (a dict with {', '.join(map(repr, required))}), "
            f"found a {type(value).__name__}"
        )
    missing = [key for key in required if key not in value]
    if missing:
        raise CheckpointError(
            f"{where}: {what} lacks {', '.join(map(repr, missing))} "
            f"(it has {', '.join(map(repr, list(value)[:12])) or 'nothing'})"
        )
    return value


def _cuda_entries(rank: _Rank, key: str, value: Any, *, single_device: int) -> None:
    """A CUDA entry: a list (``get_rng_state_all``, one per device) or one state (the
    device the process was using, ``single_device``)."""
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_STATES - 3:
            raise CheckpointError(
                f"{rank.where}: {key!r} lists {len(value)} CUDA states; a snapshot holds at "
                f"most {MAX_STATES} generators"
            )
        for index, state in enumerate(value):
            rank.entries[f"torch.cuda:{index}"] = (f"{key}[{index}]", state)
    else:
        rank.entries[f"torch.cuda:{single_device}"] = (key, value)


def _rank_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` with ``{i}`` matching a rank written as the frameworks write it."""
    return re.compile(re.escape(pattern).replace(r"\{i\}", r"(0|[1-9][0-9]{0,5})"))


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot list the folder: {exc.strerror}") from None


def _rank_files(path: Path, pattern: str, single: str | None, what: str) -> list[tuple[int, Path]]:
    """(rank, file) for ``path``: a folder holding ``pattern`` files (``{i}`` the rank), or
    ``single`` for a one-process run; or one such file."""
    rx = _rank_pattern(pattern)
    expected = pattern.replace("{i}", "N") + (f" or {single}" if single else "")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if not path.is_dir():
        match = rx.fullmatch(path.name)
        if match is not None:
            return [(int(match.group(1)), path)]
        if single is not None and path.name == single:
            return [(0, path)]
        raise CheckpointError(f"{path}: not {what} file (expected {expected})")
    names = _listdir(path)
    ranks = sorted((int(m.group(1)), path / m.group(0)) for m in map(rx.fullmatch, names) if m)
    has_single = single is not None and single in names
    if ranks and has_single:
        raise CheckpointError(
            f"{path}: holds both {single} and {pattern.replace('{i}', 'N')} files; "
            "import one of them by its file name"
        )
    if has_single:
        assert single is not None
        return [(0, path / single)]
    if not ranks:
        raise CheckpointError(f"{path}: no {expected} here; is it {what} folder?")
    missing = sorted(set(range(ranks[-1][0] + 1)) - {r for r, _ in ranks})
    if missing:
        raise CheckpointError(
            f"{path}: ranks {', '.join(map(str, missing[:8]))} have no "
            f"{pattern.replace('{i}', 'N')} file; import the files that are there one by one"
        )
    return ranks


def _world_size(files: list[tuple[int, Path]], path: Path, pattern: str) -> int:
    """The number of processes: the files in the folder (of one file, its siblings)."""
    if path.is_dir():
        return len(files)
    rx = _rank_pattern(pattern)
    siblings = [int(m.group(1)) for m in map(rx.fullmatch, _listdir(path.parent)) if m]
    return max([*siblings, files[0][0]]) + 1


def _int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


# -- the frameworks ---------------------------------------------------------------------------


def _accelerate(path: Path) -> _Found:
    """``random_states_{i}.pkl``: step, random_state, numpy_random_seed, torch_manual_seed,
    torch_cuda_manual_seed (``get_rng_state_all``) and other devices' states."""
    pattern = "random_states_{i}.pkl"
    files = _rank_files(path, pattern, None, "an Accelerator.save_state")
    ranks, step = [], None
    for rank, file in files:
        required = ("random_state", "numpy_random_seed", "torch_manual_seed")
        data = _entry_map(
            _load_file(file, limit=STATE_FILE_LIMIT), str(file), required, "accelerate's states"
        )
        found = _Rank(rank, str(file))
        found.entries["python.global"] = ("random_state", data["random_state"])
        found.entries["numpy.global"] = ("numpy_random_seed", data["numpy_random_seed"])
        found.entries["torch.cpu"] = ("torch_manual_seed", data["torch_manual_seed"])
        if "torch_cuda_manual_seed" in data:
            cuda = data["torch_cuda_manual_seed"]
            if not isinstance(cuda, (list, tuple)):
                raise CheckpointError(
                    f"{file}: 'torch_cuda_manual_seed' should list one state per CUDA device, "
                    f"found a {type(cuda).__name__}"
                )
            _cuda_entries(found, "torch_cuda_manual_seed", cuda, single_device=0)
        known = {*required, "step", "torch_cuda_manual_seed"}
        found.unknown = [str(key) for key in data if key not in known]
        step = _int(data.get("step")) if rank == files[0][0] else step
        ranks.append(found)
    created = files[0][1].stat().st_mtime
    return _Found(ranks, _world_size(files, path, pattern), created, step=step)


def _trainer_state(folder: Path) -> tuple[int | None, int | None]:
    """(global_step, whole epoch) from a Trainer checkpoint's trainer_state.json, if any."""
    try:
        file = folder / "trainer_state.json"
        if not file.is_file() or file.stat().st_size > STATE_FILE_LIMIT:
            return None, None
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None  # the step is a courtesy; the RNG states stand without it
    if not isinstance(state, dict):
        return None, None
    epoch = state.get("epoch")
    whole = int(epoch) if isinstance(epoch, float) and epoch.is_integer() and epoch >= 0 else None
    return _int(state.get("global_step")), whole


def _transformers(path: Path) -> _Found:
    """``rng_state.pth`` / ``rng_state_{i}.pth``: python, numpy, cpu, cuda (one state, or
    ``get_rng_state_all`` in a distributed run) and other devices' states."""
    pattern = "rng_state_{i}.pth"
    files = _rank_files(path, pattern, "rng_state.pth", "a Trainer checkpoint")
    ranks = []
    for rank, file in files:
        required = ("python", "numpy", "cpu")
        data = _entry_map(
            _load_file(file, limit=STATE_FILE_LIMIT), str(file), required, "the Trainer's states"
        )
        found = _Rank(rank, str(file))
        found.entries["python.global"] = ("python", data["python"])
        found.entries["numpy.global"] = ("numpy", data["numpy"])
        found.entries["torch.cpu"] = ("cpu", data["cpu"])
        if "cuda" in data:
            # Outside distributed runs the Trainer saves the current device's state: cuda:0.
            _cuda_entries(found, "cuda", data["cuda"], single_device=0)
        found.unknown = [str(key) for key in data if key not in {*required, "cuda"}]
        ranks.append(found)
    folder = path if path.is_dir() else path.parent
    step, epoch = _trainer_state(folder)
    world = 1 if files[0][1].name == "rng_state.pth" else _world_size(files, path, pattern)
    return _Found(ranks, world, files[0][1].stat().st_mtime, step=step, epoch=epoch)


_LIGHTNING_KEYS = frozenset({"torch", "python", "numpy", "torch.cuda"})


def _lightning_states(value: Any, where: str, depth: int, out: list[tuple[str, Any]]) -> None:
    """Dicts in the layout of Lightning's ``_collect_rng_states()`` inside ``value``: its
    top-level entries and the callbacks' states, a few levels down (tensors are not opened)."""
    if not isinstance(value, Mapping) or depth > 3:
        return
    keys = set(value)
    if {"torch", "python"} <= keys <= _LIGHTNING_KEYS:
        out.append((where, value))
        return
    for key, inner in value.items():
        if key == "state_dict" and depth == 0:
            continue  # the model's weights: no RNG state there
        if isinstance(inner, Mapping):
            _lightning_states(inner, f"{where}[{key!r}]" if where else repr(key), depth + 1, out)


def _lightning(path: Path) -> _Found:
    """A ``.ckpt``. Lightning (2.x) puts no RNG state into its checkpoints; a callback or
    ``on_save_checkpoint`` may have put ``_collect_rng_states()`` there."""
    if path.is_dir():
        raise CheckpointError(
            f"{path}: a folder; a Lightning checkpoint is one .ckpt file (sharded checkpoints "
            "hold no RNG state)"
        )
    checkpoint = _load_file(path, limit=None, mmap=True)
    if not isinstance(checkpoint, Mapping) or not (
        "state_dict" in checkpoint or "pytorch-lightning_version" in checkpoint
    ):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no 'state_dict' or 'pytorch-lightning_version')"
        )
    found: list[tuple[str, Any]] = []
    _lightning_states(checkpoint, "", 0, found)
    at = f"epoch {checkpoint.get('epoch')}, global step {checkpoint.get('global_step')}"
    if not found:
        raise CheckpointError(
            f"{path}: this Lightning checkpoint ({at}) holds no RNG state: Lightning saves "
            "none in its checkpoints; snapshot new runs with "
            "rngvault.integrations.lightning.RngVaultCallback"
        )
    if len(found) > 1:
        raise CheckpointError(
            f"{path}: holds {len(found)} RNG state dicts ({', '.join(w for w, _ in found)}); "
            "rngvault cannot tell which is the run's"
        )
    where, states = found[0]
    rank = _Rank(0, f"{path} {where}")
    rank.entries["python.global"] = ("python", states["python"])
    if "numpy" in states:
        rank.entries["numpy.global"] = ("numpy", states["numpy"])
    rank.entries["torch.cpu"] = ("torch", states["torch"])
    if "torch.cuda" in states:
        cuda = states["torch.cuda"]
        if not isinstance(cuda, (list, tuple)):
            raise CheckpointError(
                f"{rank.where}: 'torch.cuda' should list one state per CUDA device, found a "
                f"{type(cuda).__name__}"
            )
        _cuda_entries(rank, "torch.cuda", cuda, single_device=0)
    # Lightning writes its checkpoint from global rank 0: these are rank 0's states.
    return _Found(
        [rank],
        1,
        path.stat().st_mtime,
        step=_int(checkpoint.get("global_step")),
        epoch=_int(checkpoint.get("epoch")),
    )


_COMPOSER_STATES = "composer_states.pt"


def _composer_source(path: Path) -> tuple[str, Any, float]:
    """(where, loaded checkpoint, mtime) for a file, a tar of one, or a folder."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        path = path / _COMPOSER_STATES
        if not path.exists():
            raise CheckpointError(
                f"{path.parent}: no {_COMPOSER_STATES} here; give the checkpoint file"
            )
    status = _regular(path, "the checkpoint file")
    if not tarfile.is_tarfile(path):
        return str(path), _load(str(path), path, mmap=True), status.st_mtime
    where = f"{path}:{_COMPOSER_STATES}"
    try:
        with tarfile.open(path) as tar:
            member = next(
                (m for m in tar if m.name.removeprefix("./") == _COMPOSER_STATES and m.isfile()),
                None,
            )
            if member is None:
                raise CheckpointError(f"{path}: a tar without {_COMPOSER_STATES}")
            reader = tar.extractfile(member)
            assert reader is not None  # a regular member
            data = io.BytesIO(reader.read())  # read in memory: nothing is written to disk
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read the tar: {_line(exc)}") from None
    return where, _load(where, data), status.st_mtime


def _composer_device(state: Any, rank: int, world_size: int) -> int:
    """The CUDA device rank ``rank`` used: Composer sets ``cuda:{local rank}``, and the
    checkpoint's metadata says how many processes each node ran."""
    metadata = state.get("metadata") if isinstance(state, Mapping) else None
    info = metadata.get("composer_env_info") if isinstance(metadata, Mapping) else None
    per_node = info.get("num_gpus_per_node") if isinstance(info, Mapping) else None
    if type(per_node) is int and per_node > 0:
        return rank % per_node
    if world_size > 1:
        warn(
            f"the Composer checkpoint does not say how many processes each node ran; rank "
            f"{rank}'s CUDA state is imported as torch.cuda:0",
            ReproducibilityWarning,
        )
    return 0


def _composer(path: Path) -> _Found:
    """``{'state': ..., 'rng': [per rank: python, numpy, torch, cuda]}``."""
    where, checkpoint, created = _composer_source(path)
    if not isinstance(checkpoint, Mapping) or "rng" not in checkpoint:
        if isinstance(checkpoint, Mapping) and "state" in checkpoint:
            raise CheckpointError(
                f"{where}: this Composer checkpoint holds no RNG state (no 'rng' entry: saved "
                "with weights_only, or with 'rng' among ignore_keys)"
            )
        raise CheckpointError(f"{where}: not a Composer checkpoint (no 'state' or 'rng' entry)")
    rng = checkpoint["rng"]
    if not isinstance(rng, (list, tuple)) or not rng:
        raise CheckpointError(
            f"{where}: 'rng' should list one dict of states per rank, found "
            f"{type(rng).__name__} {rng!r:.60}"
        )
    state = checkpoint.get("state")
    ranks = []
    for index, states in enumerate(rng):
        at = f"{where} rng[{index}]"
        required = ("python", "numpy", "torch")
        data = _entry_map(states, at, required, "Composer's states for a rank")
        found = _Rank(index, at)
        found.entries["python.global"] = ("python", data["python"])
        found.entries["numpy.global"] = ("numpy", data["numpy"])
        found.entries["torch.cpu"] = ("torch", data["torch"])
        if "cuda" in data:
            device = _composer_device(state, index, len(rng))
            _cuda_entries(found, "cuda", data["cuda"], single_device=device)
        found.unknown = [str(key) for key in data if key not in {*required, "cuda"}]
        ranks.append(found)
    timestamp = state.get("timestamp") if isinstance(state, Mapping) else None
    step = epoch = None
    if isinstance(timestamp, Mapping):
        step, epoch = _int(timestamp.get("batch")), _int(timestamp.get("epoch"))
    return _Found(ranks, len(rng), created, step=step, epoch=epoch)


_READERS: dict[str, Callable[[Path], _Found]] = {
    "accelerate": _accelerate,
    "transformers": _transformers,
    "lightning": _lightning,
    "composer": _composer,
}


# -- saved values -> validated states ---------------------------------------------------------


class _Saved:
    """A saved state, handed to a family's ``capture``, which reads it as it reads a live
    generator (``getstate()`` for Python's, ``get_state()`` for torch's)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def getstate(self) -> Any:
        return self._state

    def get_state(self) -> Any:
        return self._state


def _python_fields(value: Any) -> Fields:
    """``random.getstate()``: ``(3, 625 ints, gauss_next)``; Lightning may hold a list."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise StateError(
            f"expected random.getstate()'s (version, 625 integers, gauss_next), got "
            f"{type(value).__name__} {value!r:.60}"
        )
    version, internal, gauss = value
    if version != 3:
        raise StateError(f"random state version {version!r:.40}, expected 3")
    if not isinstance(internal, (tuple, list)) or len(internal) != 625:
        raise StateError("expected 625 integers (624 key words and the index)")
    return get_family("python").capture(_Saved((version, tuple(internal), gauss)))  # type: ignore[union-attr]


def _numpy_fields(value: Any) -> Fields:
    """``np.random.get_state()``: ``('MT19937', uint32[624] key, pos, has_gauss, gauss)``."""
    if not isinstance(value, (tuple, list)) or len(value) != 5:
        raise StateError(
            f"expected np.random.get_state()'s ('MT19937', key, pos, has_gauss, gauss), got "
            f"{type(value).__name__} {value!r:.60}"
        )
    name, key, pos, has_gauss, gauss = value
    if name != "MT19937":
        raise StateError(f"bit generator {name!r:.40}, expected 'MT19937'")
    return {"key": key, "pos": pos, "has_gauss": has_gauss, "gauss": gauss}


def _torch_fields(family: str) -> Callable[[Any], Fields]:
    def fields(value: Any) -> Fields:
        """A ``torch.ByteTensor`` as ``get_rng_state()`` returns it."""
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
            shown = f"{value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value)
            raise StateError(f"expected a torch.uint8 tensor (a ByteTensor), got {shown}")
        return get_family(family).capture(_Saved(value.contiguous()))  # type: ignore[union-attr]

    return fields


# generator name (or its prefix) -> (family, saved value -> fields, a private generator of
# that kind to set the state into, None where there is none on every machine)
_KINDS_OF_STATE: dict[str, tuple[str, Callable[[Any], Fields], Callable[[], Any] | None]] = {
    "python.global": ("python", _python_fields, random.Random),
    "numpy.global": ("numpy.legacy", _numpy_fields, np.random.RandomState),
    "torch.cpu": ("torch.cpu", _torch_fields("torch.cpu"), torch.Generator),
    "torch.cuda": ("torch.cuda", _torch_fields("torch.cuda"), None),
}


def _state(name: str, entry: str, value: Any, where: str) -> State:
    """The validated state of one saved entry. The family checks the fields; then they are
    set into a private generator of the kind and read back, so the library itself has
    accepted them and they hold the types a capture gives."""
    family_name, to_fields, private = _KINDS_OF_STATE[name.partition(":")[0]]
    family = get_family(family_name)
    assert family is not None
    try:
        fields = to_fields(value)
        family.validate(fields)
        if private is not None:
            target = private()
            family.restore(target, fields)
            fields = family.capture(target)
    except StateError as exc:
        raise CheckpointError(f"{where}: entry {entry!r} ({name}): {exc}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(
            f"{where}: entry {entry!r} ({name}): the library refused it: {_line(exc)}"
        ) from None
    return State(family.name, fields)


def import_checkpoint(kind: str, path: str | os.PathLike[str]) -> list[Snapshot]:
    """The RNG states a framework's checkpoint holds, one snapshot per rank.

    ``kind`` is ``"accelerate"``, ``"transformers"``, ``"lightning"`` or ``"composer"``;
    ``path`` is the checkpoint folder or file as that framework writes it (see the module's
    table). Each snapshot holds ``python.global``, ``numpy.global``, ``torch.cpu`` and one
    ``torch.cuda:N`` per CUDA state the file holds (imported without a GPU too), each checked
    as a capture would be; its metadata has the rank, the world size and, where the
    checkpoint says, the step and epoch, and it is tagged ``imported:<kind>``; ``created`` is
    the file's modification time. Entries for devices rngvault has no family for (XLA, NPU,
    HPU...) are left out with a ``ReproducibilityWarning``.

    Raises ``CheckpointError`` (an ``RngVaultError``) naming the file and entry for a missing
    or unreadable path or an unexpected layout, and ``UnsafeCheckpointError`` for a file that
    needs a global outside the allowlist (nothing in it is used).
    """
    if kind not in _READERS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}: use one of {', '.join(KINDS)}")
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"path must be a str or a path, not {type(path).__name__}")
    found = _READERS[kind](Path(path))
    snapshots = []
    for rank in found.ranks:
        states = {
            name: _state(name, entry, value, rank.where)
            for name, (entry, value) in rank.entries.items()
        }
        metadata = Metadata(
            step=found.step,
            epoch=found.epoch,
            tags=(f"imported:{kind}",),
            rank=rank.rank,
            world_size=max(found.world_size, rank.rank + 1),
        )
        snapshots.append(Snapshot(states=states, metadata=metadata, created=found.created))
    left_out = sorted({key for rank in found.ranks for key in rank.unknown})
    if left_out:
        warn(
            f"{path}: {', '.join(map(repr, left_out))} not imported: rngvault has no generator "
            "family for them (other devices' generators); those streams will differ",
            ReproducibilityWarning,
        )
    return snapshots
