"""The embedded store: one directory, one folder per run, states kept once by content.

Layout::

    ROOT/blobs/ab/abcdef...             one generator state's encoding, named by its SHA-256
    ROOT/runs/NAMESPACE/RUN/NAME/rank-R.snap
                                        msgpack {"sha256", "size", "skeleton", "info"}
    ROOT/runs/NAMESPACE/RUN/.steps/rank-R.pack
                                        the snapshots that recorded a step (stores/_pack.py)
    ROOT/runs/NAMESPACE/RUN/.record.json
                                        the run's record (rngvault._record), written once

A snapshot with a step goes into its run and rank's pack, a few hundred bytes each, where
states are kept as deltas from earlier ones; one is durable when ``put`` returns with
``durable=True`` (the default), else within a second or at ``flush()``/``close()``. Where
``fcntl`` is missing (Windows), every snapshot gets its own file. A name is stored once per
rank, in a file or in the pack (one exception: two processes putting one name and rank at
the same moment, one with a step and one without, may both succeed; a run's writers use
the same kind of snapshot for a name, so this needs two writers disagreeing on purpose).

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
import json
import math
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack

from rngvault._errors import ConflictError, NotFoundError, RngVaultError, StoreError
from rngvault._format import decode
from rngvault._identity import same_snapshot
from rngvault._names import NAME_RULE, check_generator_name, check_name, split_run
from rngvault._record import check_record, record_json
from rngvault._snapshot import Snapshot
from rngvault._split import join, split
from rngvault.stores import _pack
from rngvault.stores.base import SnapshotInfo, StepEntry

_SHA256 = re.compile("[0-9a-f]{64}")
_NAME = re.compile(NAME_RULE)
RECORD_FILE = ".record.json"  # in a run's folder (names never start with '.': no clash)


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
        self._packs: dict[Path, _pack.Pack] = {}
        self._packs_lock = threading.Lock()
        _STORES.add(self)

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

    def _pack_of(self, run: str, rank: int) -> _pack.Pack:
        path = self._run_dir(run) / ".steps" / f"rank-{rank}.pack"
        with self._packs_lock:
            pack = self._packs.get(path)
            if pack is None:
                pack = self._packs[path] = _pack.Pack(path)
        return pack

    def _pack_ranks(self, run: str) -> list[int]:
        """The ranks with a pack in ``run``."""
        ranks = []
        for path in (self._run_dir(run) / ".steps").glob("rank-*.pack"):
            suffix = path.name[5:-5]
            if suffix.isascii() and suffix.isdigit():
                ranks.append(int(suffix))
        return sorted(ranks)

    def _packed(self, run: str, name: str, rank: int) -> _pack.Record | None:
        """The pack record of ``name`` for ``rank``, if the pack holds one."""
        pack = self._pack_of(run, rank)
        record = pack.records.get(name)
        if record is None:
            pack.refresh()
            record = pack.records.get(name)
        return record

    # -- writing ----------------------------------------------------------------------

    def put(
        self, run: str, name: str, data: bytes, snapshot: Snapshot, *, durable: bool = True
    ) -> bool:
        """Store a snapshot (see the ``Store`` protocol); with ``durable=False`` a snapshot
        with a step may reach the disk up to a second later (or at ``flush()``)."""
        if _pack.AVAILABLE and snapshot.metadata.step is not None:
            [result] = self.put_many([(run, name, data, snapshot)], durable=durable)
            if isinstance(result, BaseException):
                raise result
            return result
        target = self._file(run, name, snapshot.metadata.rank)
        sha = hashlib.sha256(data).hexdigest()
        if target.exists():
            return self._same(target, sha, run, name, snapshot)
        if self._packed(run, name, snapshot.metadata.rank) is not None:
            return self._same_snapshot(run, name, snapshot)
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

    def put_many(
        self,
        items: Sequence[tuple[str, str, bytes, Snapshot]],
        *,
        durable: bool = True,
    ) -> list[bool | RngVaultError]:
        """Store several snapshots (``put``'s arguments each); one result per item: True
        (stored), False (already stored) or the item's error. Snapshots with a step that
        share a run and rank are appended to its pack together, with one sync."""
        results: list[bool | RngVaultError | None] = [None] * len(items)
        groups: dict[tuple[str, int], list[int]] = {}
        for index, (run, name, data, snapshot) in enumerate(items):
            if _pack.AVAILABLE and snapshot.metadata.step is not None:
                try:
                    check_name(name)
                    split_run(run)
                except RngVaultError as exc:
                    results[index] = exc
                    continue
                groups.setdefault((run, snapshot.metadata.rank), []).append(index)
                continue
            try:
                results[index] = self.put(run, name, data, snapshot)
            except RngVaultError as exc:
                results[index] = exc
        for (run, rank), indexes in groups.items():
            self._append(run, rank, [items[i] for i in indexes], indexes, results, durable)
        return [r if r is not None else StoreError("not stored") for r in results]

    def _append(
        self,
        run: str,
        rank: int,
        items: Sequence[tuple[str, str, bytes, Snapshot]],
        indexes: Sequence[int],
        results: list[bool | RngVaultError | None],
        durable: bool,
    ) -> None:
        """Append one run and rank's snapshots to its pack; fill in their results."""
        batch = [
            (name, data, snapshot, SnapshotInfo.of(run, name, snapshot, len(data)))
            for _run, name, data, snapshot in items
        ]
        run_dir = str(self._run_dir(run))  # names were checked: plain string paths suffice
        try:
            answers = self._pack_of(run, rank).append(
                batch,
                lambda name: os.path.exists(f"{run_dir}/{name}/rank-{rank}.snap"),
                durable,
            )
        except OSError as exc:
            error = StoreError(f"cannot write {run} to {self.location}: {exc}")
            answers = [error] * len(items)
        except RngVaultError as exc:
            answers = [exc] * len(items)
        for index, item, answer in zip(indexes, items, answers, strict=True):
            if isinstance(answer, (bool, RngVaultError)):
                results[index] = answer
                continue
            try:  # the name holds other bytes, in the pack or a file: the same snapshot?
                results[index] = self._same_snapshot(run, item[1], item[3])
            except RngVaultError as exc:
                results[index] = exc

    def _same_snapshot(self, run: str, name: str, snapshot: Snapshot) -> bool:
        """False when the stored ``name`` is the same snapshot, else a ConflictError."""
        rank = snapshot.metadata.rank
        if same_snapshot(decode(self.get(run, name, rank)), snapshot):
            return False
        raise ConflictError(
            f"snapshot {run}/{name} (rank {rank}) already exists in {self.location} with other "
            "states or metadata; snapshots are immutable: choose another name"
        )

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
        if self._record(target, run, name)["sha256"] == sha:
            return False
        return self._same_snapshot(run, name, snapshot)

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
            packed = self._packed(run, name, rank) if _pack.AVAILABLE else None
            if packed is not None:
                return self._pack_of(run, rank).read(packed)
            self._raise_damage(run, rank, f"snapshot {run}/{name} may be past it")
            ranks = self._name_ranks(run, name)
            if ranks:
                shown = ", ".join(str(r) for r in ranks)
                raise NotFoundError(
                    f"snapshot {run}/{name} has no rank {rank} (stored ranks: {shown})"
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
            data = join(record["skeleton"], blob, record["size"])
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StoreError(f"damaged snapshot file {path}: {exc}") from None
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise StoreError(f"{run}/{name} (rank {rank}) is corrupt in {self.location}")
        return data

    def _raise_damage(self, run: str, rank: int, what: str) -> None:
        """A StoreError if ``rank``'s pack of ``run`` is damaged (what follows the damage
        cannot be read: a search that did not find something there must not say "none")."""
        if not _pack.AVAILABLE or rank not in self._pack_ranks(run):
            return
        damage = self._pack_of(run, rank).damage
        if damage is not None:
            raise StoreError(f"{damage}; {what}")

    def _name_ranks(self, run: str, name: str) -> list[int]:
        """The ranks stored under ``name``, in files and packs."""
        directory = self._run_dir(run) / name
        ranks = set(self._ranks(directory)) if directory.is_dir() else set()
        if _pack.AVAILABLE:
            ranks.update(r for r in self._pack_ranks(run) if self._packed(run, name, r))
        return sorted(ranks)

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
        # name -> {rank: (source, its info)}: the lowest rank speaks for the snapshot
        found: dict[str, dict[int, tuple[str, Any]]] = {}
        for directory in run_dir.iterdir():
            ranks = self._ranks(directory) if directory.is_dir() else []
            if not ranks or not _NAME.fullmatch(directory.name):
                continue  # not a snapshot's folder
            entry = found.setdefault(directory.name, {})
            for rank in ranks:
                entry[rank] = (str(directory / f"rank-{rank}.snap"), None)
        packs = {rank: self._pack_of(run, rank) for rank in self._pack_ranks(run)}
        for rank, pack in packs.items():
            pack.refresh()
            for record in pack.order:
                found.setdefault(record.name, {}).setdefault(rank, (str(pack.path), record))
        infos = []
        for name, by_rank in found.items():
            lowest = min(by_rank)
            source, record = by_rank[lowest]
            if record is None:
                stored = self._record(Path(source), run, name)["info"]
                # Where the file is says which snapshot it is; the record says the rest.
            else:
                stored = dict(packs[lowest].info(record), size=record.size)
            info = dict(stored, run=run, name=name, ranks=sorted(by_rank))
            infos.append(SnapshotInfo.from_dict(info, source=source))
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
        if _pack.AVAILABLE and rank in self._pack_ranks(run):
            pack = self._pack_of(run, rank)
            pack.refresh()
            self._raise_damage(run, rank, "the steps after it cannot be listed")
            for packed in pack.order:
                if packed.step is None or (start is not None and packed.step < start):
                    continue
                state = pack.state_hash(packed, generator) if generator is not None else None
                entry = StepEntry(packed.step, packed.name, packed.digest, state)
                created = packed.created if not math.isnan(packed.created) else 0.0
                found.append((packed.step, created, packed.name, entry))
        found.sort(key=lambda item: item[:2])  # stable: a pack's records in stored order
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

    # -- run records ------------------------------------------------------------------

    def put_record(self, run: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Keep ``record`` as the run's unless it has one (see the ``Store`` protocol): a
        temporary file, synced, then linked into place, which fails if a record is there
        (another process's, written first: that one is kept and returned)."""
        text = record_json(record)
        target = self._run_dir(run) / RECORD_FILE
        if target.exists():
            return self.record(run)
        try:
            temp = _write_temp(target.parent, text.encode())
            try:
                os.link(temp, target)
            except FileExistsError:
                return self.record(run)
            finally:
                temp.unlink()
            _fsync_dir(target.parent)
            _fsync_dir(target.parent.parent)  # the run's folder may be new
        except OSError as exc:
            raise StoreError(f"cannot write the record of {run} to {self.location}: {exc}") from exc
        kept: dict[str, Any] = json.loads(text)
        return kept

    def record(self, run: str) -> dict[str, Any]:
        run_dir = self._run_dir(run)
        path = run_dir / RECORD_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not run_dir.is_dir():
                raise NotFoundError(f"no run {run!r} at {self.location}") from None
            return {}
        except OSError as exc:
            raise StoreError(f"unreadable run record {path}: {exc}") from exc
        try:
            return check_record(json.loads(raw.decode("utf-8")), allow_unknown=True)
        except (ValueError, RecursionError) as exc:  # RecordError and JSON errors among them
            raise StoreError(f"damaged run record {path}: {exc}") from None

    def flush(self) -> int:
        """Make every snapshot put so far durable (packs are synced); returns 0."""
        with self._packs_lock:
            packs = list(self._packs.values())
        for pack in packs:
            pack.sync()
        return 0

    def close(self) -> None:
        with self._packs_lock:
            packs, self._packs = list(self._packs.values()), {}
        for pack in packs:
            pack.close()


_STORES: weakref.WeakSet[LocalStore] = weakref.WeakSet()


def _locks_after_fork() -> None:
    """In a forked child, new locks (a parent's thread may have held one at the fork)."""
    for store in list(_STORES):
        store._packs_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_locks_after_fork)


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
