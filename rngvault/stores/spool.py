"""The spool: snapshots the server has not acknowledged yet, on disk, one file each.

When the server is unreachable, hangs, times out or answers 5xx, a snapshot is written here
(temporary file, fsync, rename) and sent later: by the same process once the server answers,
by the next process that uses the same server, by ``vault.flush()`` or by
``rngvault --url URL spool flush``. A snapshot the server refused with 409 (the name holds
other content) moves to ``conflicts/`` and is never retried: the user decides. A snapshot
the server failed to take ``MAX_ATTEMPTS`` times while it answered otherwise (5xx for that
snapshot alone) moves to ``failed/`` with the server's last error, so that it never blocks
the others; ``rngvault --url URL spool retry`` puts it back.

Layout: ``SPOOL/<hash of the server URL>/<time>-<pid>-<n>.snap`` holding msgpack
``{"url", "run", "name", "rank", "data", "spooled"}`` (and ``"attempts"``, ``"error"`` once
the server failed to take it); the directory's ``url`` file names the server. The spool's
total size is capped (``RNGVAULT_SPOOL_MAX_BYTES``, default 1 GiB).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgpack

from rngvault._config import client_config
from rngvault._errors import SpoolWarning, StoreError
from rngvault.stores.local import _fsync_dir, _write_temp

MAX_ATTEMPTS = 3  # failures of one snapshot, with the server up, before it is set aside
_COUNTER = itertools.count()

Bucket = Literal["waiting", "refused", "conflict", "failed"]
BUCKETS: tuple[Bucket, ...] = ("waiting", "refused", "conflict", "failed")
# The folder of each bucket inside a server's spool ("" is the spool's own folder).
_FOLDERS: dict[Bucket, str] = {
    "waiting": "",
    "refused": "refused",
    "conflict": "conflicts",
    "failed": "failed",
}


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def spool_root() -> Path:
    """Where spools live: ``$RNGVAULT_SPOOL`` or the data directory's ``spool``."""
    return client_config().spool_dir


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled snapshot.

    Attributes:
        path: its file.
        url: the server it is for.
        run, name, rank: where it goes.
        data: the encoded snapshot.
        spooled: when it was spooled (seconds since the epoch).
        attempts: how many times the server failed to take it while answering otherwise.
        error: the server's last error for it ("" before the first).
        bucket: ``"waiting"``, ``"refused"`` (401/403), ``"conflict"`` (409 or another
            refusal of the snapshot itself) or ``"failed"`` (see the module docstring).
    """

    path: Path
    url: str
    run: str
    name: str
    rank: int
    data: bytes
    spooled: float
    attempts: int = 0
    error: str = ""
    bucket: Bucket = "waiting"

    def _record(self, **changes: object) -> bytes:
        fields = {
            "url": self.url,
            "run": self.run,
            "name": self.name,
            "rank": self.rank,
            "data": self.data,
            "spooled": self.spooled,
            "attempts": self.attempts,
            "error": self.error,
        }
        return msgpack.packb({**fields, **changes})


def _read_entry(path: Path, raw: object, bucket: Bucket = "waiting") -> SpoolEntry:
    """A spool file's record, its fields checked (TypeError names the bad one)."""
    if not isinstance(raw, dict):
        raise TypeError(f"a record must be a map, not {type(raw).__name__}")
    kinds: dict[str, tuple[type, ...]] = {
        "url": (str,),
        "run": (str,),
        "name": (str,),
        "rank": (int,),
        "data": (bytes,),
        "spooled": (int, float),
        "attempts": (int,),
        "error": (str,),
    }
    values = {"attempts": 0, "error": "", **raw}
    for key, kind in kinds.items():
        value = values.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"field {key!r} is {value!r:.60}")
    return SpoolEntry(path=path, bucket=bucket, **{key: values[key] for key in kinds})


class Spool:
    """The spool of one server URL."""

    def __init__(self, url: str, root: Path | None = None) -> None:
        self.url = url
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.directory = (root or spool_root()) / digest
        self.refused = self.directory / _FOLDERS["refused"]
        self.conflicts = self.directory / _FOLDERS["conflict"]
        self.failed = self.directory / _FOLDERS["failed"]

    def __repr__(self) -> str:
        return f"Spool({self.url!r} at {str(self.directory)!r})"

    def folder(self, bucket: Bucket) -> Path:
        """The folder holding ``bucket``'s snapshots."""
        if bucket not in _FOLDERS:
            raise StoreError(f"unknown spool bucket {bucket!r}: one of {', '.join(BUCKETS)}")
        name = _FOLDERS[bucket]
        return self.directory / name if name else self.directory

    def add(
        self,
        run: str,
        name: str,
        rank: int,
        data: bytes,
        *,
        conflict: bool = False,
        bucket: Bucket = "waiting",
        error: str = "",
    ) -> Path:
        """Keep a snapshot on disk (durably) in ``bucket`` (``conflict=True``: in
        ``"conflict"``) until it can be sent; ``error`` says why it is not waiting."""
        limit = client_config().spool_max_bytes
        used = self.size()
        if used + len(data) > limit:
            raise StoreError(
                f"the spool at {self.directory} is full ({used} of {limit} bytes, "
                f"RNGVAULT_SPOOL_MAX_BYTES): snapshot {run}/{name} (rank {rank}) could not be "
                f"kept; bring {self.url} back, or run `rngvault --url {self.url} spool flush`"
            )
        fields = {"url": self.url, "run": run, "name": name, "rank": rank, "data": data}
        record = msgpack.packb(
            {**fields, "spooled": time.time(), **({"error": error} if error else {})}
        )
        directory = self.folder("conflict" if conflict else bucket)
        directory.mkdir(parents=True, exist_ok=True)
        url_file = self.directory / "url"
        if not url_file.exists():
            url_file.write_text(self.url + "\n")
        target = directory / f"{time.time_ns():020d}-{os.getpid()}-{next(_COUNTER)}.snap"
        temp = _write_temp(directory, record)
        os.replace(temp, target)
        _fsync_dir(directory)
        return target

    def _read(self, path: Path, bucket: Bucket = "waiting") -> SpoolEntry | None:
        try:
            return _read_entry(path, msgpack.unpackb(path.read_bytes(), raw=False), bucket)
        except FileNotFoundError:
            return None  # sent by another process meanwhile
        except (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            # Never let one damaged file block the rest: move it aside and say so.
            self.conflicts.mkdir(parents=True, exist_ok=True)
            target = self.conflicts / (path.name + ".unreadable")
            with contextlib.suppress(OSError):
                os.replace(path, target)
            warnings.warn(
                f"rngvault: unreadable spool file {path} ({exc}) moved to {target}",
                SpoolWarning,
                stacklevel=3,
            )
            return None

    def _paths(self, directory: Path) -> list[Path]:
        return sorted(directory.glob("*.snap")) if directory.is_dir() else []

    def in_bucket(self, bucket: Bucket) -> list[SpoolEntry]:
        """The snapshots of ``bucket``, oldest first."""
        paths = self._paths(self.folder(bucket))
        return [e for p in paths if (e := self._read(p, bucket)) is not None]

    def entries(self) -> list[SpoolEntry]:
        """Snapshots waiting to be sent, oldest first."""
        return self.in_bucket("waiting")

    def refusals(self) -> list[SpoolEntry]:
        """Snapshots the server refused for the token (401/403): sent again by ``retry``."""
        return self.in_bucket("refused")

    def conflicting(self) -> list[SpoolEntry]:
        """Snapshots the server refused (409): they wait for the user."""
        return self.in_bucket("conflict")

    def failures(self) -> list[SpoolEntry]:
        """Snapshots the server failed to take ``MAX_ATTEMPTS`` times: they wait for the
        user (``retry``), with the server's last error."""
        return self.in_bucket("failed")

    def __len__(self) -> int:
        return len(self._paths(self.directory))

    # -- run records: one per run, sent before the snapshots --------------------------------

    @property
    def records(self) -> Path:
        return self.directory / "records"

    def add_record(self, run: str, text: str) -> None:
        """Keep ``run``'s record (``record_json`` text) until it can be sent; a run whose
        record already waits keeps that one (a run keeps its first record)."""
        self.records.mkdir(parents=True, exist_ok=True)
        target = self.records / (hashlib.sha256(run.encode()).hexdigest()[:32] + ".json")
        if target.exists():
            return
        data = json.dumps({"run": run, "record": text}).encode()
        temp = _write_temp(self.records, data)
        os.replace(temp, target)
        _fsync_dir(self.records)

    def waiting_records(self) -> list[tuple[Path, str, str]]:
        """(file, run, record text) of each record waiting, oldest first; an unreadable
        file is removed (a record is a courtesy: it never blocks the snapshots)."""
        if not self.records.is_dir():
            return []
        found = []
        for path in sorted(self.records.glob("*.json"), key=_mtime):
            try:
                held = json.loads(path.read_bytes())
                found.append((path, str(held["run"]), str(held["record"])))
            except FileNotFoundError:
                continue  # sent by another process meanwhile
            except (OSError, ValueError, KeyError, TypeError) as exc:
                with contextlib.suppress(OSError):
                    path.unlink()
                warnings.warn(
                    f"rngvault: unreadable spooled run record {path} ({exc}) removed",
                    SpoolWarning,
                    stacklevel=2,
                )
        return found

    def count(self, bucket: Bucket) -> int:
        """How many snapshots ``bucket`` holds (without reading them)."""
        return len(self._paths(self.folder(bucket)))

    def size(self) -> int:
        """Bytes used by the spool, every bucket included."""
        total = 0
        for bucket in BUCKETS:
            for path in self._paths(self.folder(bucket)):
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    def remove(self, entry: SpoolEntry) -> None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()

    def set_aside(self, entry: SpoolEntry, bucket: Bucket = "conflict", error: str = "") -> Path:
        """Move a refused snapshot to ``bucket`` (``conflicts/`` by default), keeping the
        server's words when given."""
        directory = self.folder(bucket)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / entry.path.name
        if not error:
            with contextlib.suppress(FileNotFoundError):  # another process set it aside first
                os.replace(entry.path, target)
            return target
        if not entry.path.exists():
            return target  # sent or set aside by another process meanwhile
        os.replace(_write_temp(directory, entry._record(error=error)), target)
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        _fsync_dir(directory)
        return target

    def charge(self, entry: SpoolEntry, error: str) -> Path | None:
        """Count one failure of the server to take ``entry``, keeping its last error; at
        ``MAX_ATTEMPTS`` move it to ``failed/`` and return where it went (else None)."""
        attempts = entry.attempts + 1
        full = attempts >= MAX_ATTEMPTS
        directory = self.failed if full else self.directory
        target = directory / entry.path.name
        if not entry.path.exists():
            return None  # sent or set aside by another process meanwhile
        temp = _write_temp(directory, entry._record(attempts=attempts, error=error))
        os.replace(temp, target)
        if full:
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
        _fsync_dir(directory)
        return target if full else None

    def move_back(self, bucket: Bucket) -> list[SpoolEntry]:
        """Move every snapshot of ``bucket`` back to the waiting ones, its count of attempts
        and its error reset; returns them."""
        moved = []
        for entry in self.in_bucket(bucket) if bucket != "waiting" else []:
            temp = _write_temp(self.directory, entry._record(attempts=0, error=""))
            os.replace(temp, self.directory / entry.path.name)
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
            moved.append(entry)
        if moved:
            _fsync_dir(self.directory)
        return moved

    def retry_failed(self) -> list[SpoolEntry]:
        """Move every snapshot of ``failed/`` back to the waiting ones (``move_back``)."""
        return self.move_back("failed")


def all_spools(root: Path | None = None) -> list[Spool]:
    """Every server's spool under ``root``."""
    base = root or spool_root()
    spools = []
    if base.is_dir():
        for directory in sorted(base.iterdir()):
            url_file = directory / "url"
            if url_file.is_file():
                spools.append(Spool(url_file.read_text().strip(), base))
    return spools


def _spools(url: str | None, root: Path | None) -> list[Spool]:
    if url is None:
        return all_spools(root)
    return [Spool(url.rstrip("/"), root)]


def _buckets(bucket: Bucket | Iterable[Bucket] | None) -> tuple[Bucket, ...]:
    chosen = BUCKETS if bucket is None else (bucket,) if isinstance(bucket, str) else tuple(bucket)
    for one in chosen:
        if one not in BUCKETS:
            raise StoreError(f"unknown spool bucket {one!r}: one of {', '.join(BUCKETS)}")
    return chosen


def list_entries(
    url: str | None = None,
    *,
    bucket: Bucket | Iterable[Bucket] | None = None,
    root: Path | None = None,
) -> list[SpoolEntry]:
    """What the spool holds: for the server ``url`` (every server's spool when None), in
    ``bucket`` (a name, several, or every bucket when None), each bucket oldest first.

    ``entry.bucket`` says where each is: ``"waiting"`` (sent when the server answers),
    ``"refused"`` (401/403: fix the token, then ``retry``), ``"conflict"`` (409: the name
    holds other content; ``drop`` it or store it under another name) or ``"failed"`` (the
    server failed to take it ``MAX_ATTEMPTS`` times; ``entry.error`` says why)."""
    chosen = _buckets(bucket)
    return [
        entry for spool in _spools(url, root) for one in chosen for entry in spool.in_bucket(one)
    ]


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    """What ``retry`` did.

    Attributes:
        moved: how many snapshots it moved back to the waiting ones.
        left: how many are still held back after sending (waiting or refused again):
            0 when everything was sent.
    """

    moved: int
    left: int


def retry(
    url: str,
    *,
    bucket: Bucket | Iterable[Bucket] = ("refused", "failed"),
    token: str | None = None,
    root: Path | None = None,
    send: bool = True,
) -> RetryOutcome:
    """Move the snapshots of ``bucket`` (by default the refused and the failed ones) of the
    server ``url``'s spool back to the waiting ones and, with ``send``, send everything
    that waits now with ``token`` (``$RNGVAULT_TOKEN`` when None); no other server sees
    that token. Warnings say what the server refused again (``SpoolWarning``)."""
    from rngvault.stores.http import HttpStore

    if not url.lower().startswith(("http://", "https://")):
        raise StoreError(f"a spool belongs to a server URL (http:// or https://), not {url!r}")
    spool = Spool(url.rstrip("/"), root)
    moved = sum(len(spool.move_back(one)) for one in _buckets(bucket))
    if not send:
        return RetryOutcome(moved, len(spool) + spool.count("refused"))
    store = HttpStore(spool.url, token=token, spool=spool)
    try:
        left = store.flush()
    finally:
        store.close()
    return RetryOutcome(moved, left)


def drop(
    url: str,
    *,
    bucket: Bucket | Iterable[Bucket] | None = None,
    entries: Iterable[SpoolEntry] | None = None,
    root: Path | None = None,
) -> int:
    """Delete snapshots from the server ``url``'s spool for good: the given ``entries``
    (from ``list_entries``), or every one of ``bucket``; one of the two is required.
    Returns how many were deleted."""
    if (bucket is None) == (entries is None):
        raise StoreError("drop needs either the entries or the bucket(s) to delete")
    spool = Spool(url.rstrip("/"), root)
    if entries is None:
        entries = list_entries(spool.url, bucket=bucket, root=root)
    dropped = 0
    for entry in entries:
        if entry.path.parent not in {spool.folder(one) for one in BUCKETS}:
            raise StoreError(f"{entry.path} is not in the spool of {spool.url}")
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
            dropped += 1
    return dropped
