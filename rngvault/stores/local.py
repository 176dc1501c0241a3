"""The embedded store: one directory, one folder per run, states kept once by content.

Layout::

    ROOT/blobs/ab/abcdef...             one generator state's encoding, named by its SHA-256
    ROOT/runs/NAMESPACE/RUN/NAME/rank-R.snap
                                        msgpack {"sha256", "size", "skeleton", "info"}

Every file is written to a temporary name, fsynced, then moved into place; a snapshot file
is created with ``link`` (which fails if the name exists), so two processes writing the
same run never overwrite each other: the loser compares and either finds its own snapshot
(the same bytes, or the same states and user metadata: ``rngvault._identity``; a no-op that
keeps the stored bytes) or raises ConflictError. Blobs are written before the snapshot that
refers to them; a blob already there is reused only if it still hashes to its name (else
it is written again). Everything read back is checked before use: a record that is not
the map above, or a digest that is not 64 hex digits, is a StoreError naming the file, so
no file can make the store open a path outside its directory.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from rngvault._errors import ConflictError, NotFoundError, StoreError
from rngvault._format import decode
from rngvault._identity import same_snapshot
from rngvault._names import NAME_RULE, check_generator_name, check_name, split_run
from rngvault._snapshot import Snapshot
from rngvault._split import join, split
from rngvault.stores.base import SnapshotInfo, StepEntry

_SHA256 = re.compile("[0-9a-f]{64}")
_NAME = re.compile(NAME_RULE)


def _oldest_first(info: SnapshotInfo) -> tuple[bool, float, str]:
    known = not math.isnan(info.created)
    return (not known, info.created if known else 0.0, info.name)


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: bytes, *, durable: bool = True) -> Path:
    """``data`` in a new temporary file of ``directory`` (fsynced unless ``durable=False``),
    ready to be moved into place."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


class LocalStore:
    """Snapshots in a local directory (shared safely by several processes)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.location = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.location!r})"

    # -- paths ------------------------------------------------------------------------

    def _run_dir(self, run: str) -> Path:
        namespace, name = split_run(run)
        return self.root / "runs" / namespace / name

    def _file(self, run: str, name: str, rank: int) -> Path:
        return self._run_dir(run) / check_name(name) / f"rank-{rank}.snap"

    def _blob(self, digest: object) -> Path:
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise StoreError(f"{digest!r:.80} is not a state digest (64 lowercase hex digits)")
        return self.root / "blobs" / digest[:2] / digest

    # -- writing ----------------------------------------------------------------------

    def put(self, run: str, name: str, data: bytes, snapshot: Snapshot) -> bool:
        target = self._file(run, name, snapshot.metadata.rank)
        sha = hashlib.sha256(data).hexdigest()
        if target.exists():
            return self._same(target, sha, run, name, snapshot)
        parts = split(data)
        try:
            for digest, blob in parts.blobs.items():  # even reused ones: they are checked
                self._put_blob(digest, blob)
            record = msgpack.packb(
                {
                    "sha256": sha,
                    "size": len(data),
                    "skeleton": parts.skeleton(),
                    "info": SnapshotInfo.of(run, name, snapshot, len(data)).to_dict(),
                }
            )
            temp = _write_temp(target.parent, record)
            try:
                os.link(temp, target)
            except FileExistsError:
                return self._same(target, sha, run, name, snapshot)
            finally:
                temp.unlink()
            _fsync_dir(target.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {run}/{name} to {self.location}: {exc}") from exc
        return True

    def _put_blob(self, digest: str, blob: bytes) -> None:
        """Write a state blob, unless one that hashes to its name is there already (a
        truncated or damaged one is replaced, so the snapshot being written is readable)."""
        path = self._blob(digest)
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                return
        except FileNotFoundError:
            pass
        temp = _write_temp(path.parent, blob)
        os.replace(temp, path)
        _fsync_dir(path.parent)

    def _same(self, target: Path, sha: str, run: str, name: str, snapshot: Snapshot) -> bool:
        """False when the name already holds this snapshot (the same bytes, or the same
        states and user metadata: ``same_snapshot``; the stored bytes are kept), else a
        ConflictError."""
        rank = snapshot.metadata.rank
        if self._record(target, run, name)["sha256"] == sha:
            return False
        if same_snapshot(decode(self.get(run, name, rank)), snapshot):
            return False
        raise ConflictError(
            f"snapshot {run}/{name} (rank {rank}) already exists in {self.location} with other "
            "states or metadata; snapshots are immutable: choose another name"
        )

    # -- reading ----------------------------------------------------------------------

    def _record(self, path: Path, run: str, name: str) -> dict[str, Any]:
        """A snapshot file's record, its shape checked (StoreError naming the file)."""
        try:
            record = msgpack.unpackb(path.read_bytes(), raw=False)
        except FileNotFoundError:
            raise NotFoundError(f"no snapshot {name!r} in run {run!r} at {self.location}") from None
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            raise StoreError(f"unreadable snapshot file {path}: {exc}") from exc
        shape = {"sha256": str, "size": int, "skeleton": bytes, "info": dict}
        if not isinstance(record, dict):
            raise StoreError(f"damaged snapshot file {path}: not a map")
        for key, kind in shape.items():
            if not isinstance(record.get(key), kind):
                raise StoreError(
                    f"damaged snapshot file {path}: {key!r} is {record.get(key)!r:.60}, "
                    f"expected {kind.__name__}"
                )
        return record

    def get(self, run: str, name: str, rank: int = 0, *, digest: str | None = None) -> bytes:
        path = self._file(run, name, rank)
        if not path.exists():
            if path.parent.exists():
                ranks = ", ".join(str(r) for r in self._ranks(path.parent))
                raise NotFoundError(
                    f"snapshot {run}/{name} has no rank {rank} (stored ranks: {ranks})"
                )
            raise NotFoundError(f"no snapshot {name!r} in run {run!r} at {self.location}")
        record = self._record(path, run, name)

        def blob(digest: str) -> bytes:
            try:
                return self._blob(digest).read_bytes()
            except StoreError as exc:
                raise StoreError(f"damaged snapshot file {path}: {exc}") from None
            except OSError as exc:
                raise StoreError(f"{run}/{name}: state blob {digest} is missing: {exc}") from exc

        try:
            data = join(record["skeleton"], blob)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StoreError(f"damaged snapshot file {path}: {exc}") from None
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise StoreError(f"{run}/{name} (rank {rank}) is corrupt in {self.location}")
        return data

    @staticmethod
    def _ranks(directory: Path) -> list[int]:
        ranks = []
        for path in directory.glob("rank-*.snap"):
            suffix = path.stem[5:]
            if suffix.isascii() and suffix.isdigit():
                ranks.append(int(suffix))
        return sorted(ranks)

    def snapshots(self, run: str) -> list[SnapshotInfo]:
        run_dir = self._run_dir(run)
        if not run_dir.is_dir():
            raise NotFoundError(f"no run {run!r} at {self.location}")
        infos = []
        for directory in run_dir.iterdir():
            ranks = self._ranks(directory) if directory.is_dir() else []
            if not ranks or not _NAME.fullmatch(directory.name):
                continue  # not a snapshot's folder
            path = directory / f"rank-{ranks[0]}.snap"
            record = self._record(path, run, directory.name)
            # Where the file is says which snapshot it is; the record says the rest.
            info = dict(record["info"], run=run, name=directory.name, ranks=ranks)
            infos.append(SnapshotInfo.from_dict(info, source=str(path)))
        return sorted(infos, key=_oldest_first)

    def iter_snapshots(self, run: str, limit: int | None = None) -> Iterator[SnapshotInfo]:
        """A run's snapshots, oldest first (at most ``limit``), as ``HttpStore`` lists them
        page by page; a directory is read whole, to put it in order."""
        yield from self.snapshots(run)[:limit]

    def steps(
        self,
        run: str,
        *,
        rank: int = 0,
        start: int | None = None,
        generator: str | None = None,
    ) -> Iterator[StepEntry]:
        if generator is not None:
            check_generator_name(generator)
        run_dir = self._run_dir(run)
        if not run_dir.is_dir():
            raise NotFoundError(f"no run {run!r} at {self.location}")
        found: list[tuple[int, float, str, StepEntry]] = []
        wanted = generator.encode() if generator is not None else None
        for directory in run_dir.iterdir():
            path = directory / f"rank-{rank}.snap"
            if not _NAME.fullmatch(directory.name) or not path.is_file():
                continue
            record = self._record(path, run, directory.name)
            info = SnapshotInfo.from_dict(
                dict(record["info"], run=run, name=directory.name, ranks=[rank]),
                source=str(path),
            )
            if info.step is None or (start is not None and info.step < start):
                continue
            state = None
            if wanted is not None:
                state = _state_hash(record["skeleton"], wanted, path)
            entry = StepEntry(info.step, directory.name, info.digest, state)
            known = not math.isnan(info.created)
            found.append((info.step, info.created if known else 0.0, directory.name, entry))
        found.sort(key=lambda item: item[:3])
        for *_key, entry in found:
            yield entry

    def runs(self) -> list[str]:
        base = self.root / "runs"
        if not base.is_dir():
            return []
        return sorted(
            f"{ns.name}/{run.name}"
            for ns in base.iterdir()
            if ns.is_dir()
            for run in ns.iterdir()
            if run.is_dir()
        )

    def flush(self) -> int:
        return 0  # every put is already durable

    def close(self) -> None:
        pass


def _state_hash(skeleton: bytes, generator: bytes, path: Path) -> str | None:
    """The blob hash of ``generator``'s state in a snapshot record's skeleton (None if the
    snapshot has no such generator)."""
    try:
        _prefix, entries, _suffix = msgpack.unpackb(skeleton, raw=True)
        for encoded_name, digest in entries:
            if msgpack.unpackb(encoded_name, raw=True) == generator:
                return digest.decode() if isinstance(digest, bytes) else str(digest)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StoreError(f"damaged snapshot file {path}: {exc}") from None
    return None
