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
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import msgpack

from rngvault._errors import StoreError
from rngvault._paths import data_dir
from rngvault.stores.local import _fsync_dir, _write_temp

DEFAULT_MAX_BYTES = 2**30
MAX_ATTEMPTS = 3  # failures of one snapshot, with the server up, before it is set aside
_COUNTER = itertools.count()


def spool_root() -> Path:
    """Where spools live: ``$RNGVAULT_SPOOL`` or the data directory's ``spool``."""
    configured = os.environ.get("RNGVAULT_SPOOL")
    return Path(configured).expanduser() if configured else data_dir() / "spool"


def max_bytes() -> int:
    value = os.environ.get("RNGVAULT_SPOOL_MAX_BYTES")
    try:
        return int(value) if value else DEFAULT_MAX_BYTES
    except ValueError:
        raise StoreError(f"RNGVAULT_SPOOL_MAX_BYTES={value!r} is not a number of bytes") from None


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


def _read_entry(path: Path, raw: object) -> SpoolEntry:
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
    return SpoolEntry(path, *(values[key] for key in kinds))


class Spool:
    """The spool of one server URL."""

    def __init__(self, url: str, root: Path | None = None) -> None:
        self.url = url
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.directory = (root or spool_root()) / digest
        self.conflicts = self.directory / "conflicts"
        self.failed = self.directory / "failed"

    def __repr__(self) -> str:
        return f"Spool({self.url!r} at {str(self.directory)!r})"

    def add(self, run: str, name: str, rank: int, data: bytes, *, conflict: bool = False) -> Path:
        """Keep a snapshot on disk (durably) until it can be sent."""
        limit = max_bytes()
        used = self.size()
        if used + len(data) > limit:
            raise StoreError(
                f"the spool at {self.directory} is full ({used} of {limit} bytes, "
                f"RNGVAULT_SPOOL_MAX_BYTES): snapshot {run}/{name} (rank {rank}) could not be "
                f"kept; bring {self.url} back, or run `rngvault --url {self.url} spool flush`"
            )
        record = msgpack.packb(
            {
                "url": self.url,
                "run": run,
                "name": name,
                "rank": rank,
                "data": data,
                "spooled": time.time(),
            }
        )
        directory = self.conflicts if conflict else self.directory
        directory.mkdir(parents=True, exist_ok=True)
        url_file = self.directory / "url"
        if not url_file.exists():
            url_file.write_text(self.url + "\n")
        target = directory / f"{time.time_ns():020d}-{os.getpid()}-{next(_COUNTER)}.snap"
        temp = _write_temp(directory, record)
        os.replace(temp, target)
        _fsync_dir(directory)
        return target

    def _read(self, path: Path) -> SpoolEntry | None:
        try:
            return _read_entry(path, msgpack.unpackb(path.read_bytes(), raw=False))
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
                UserWarning,
                stacklevel=3,
            )
            return None

    def _paths(self, directory: Path) -> list[Path]:
        return sorted(directory.glob("*.snap")) if directory.is_dir() else []

    def entries(self) -> list[SpoolEntry]:
        """Snapshots waiting to be sent, oldest first."""
        return [e for p in self._paths(self.directory) if (e := self._read(p)) is not None]

    def conflicting(self) -> list[SpoolEntry]:
        """Snapshots the server refused (409): they wait for the user."""
        return [e for p in self._paths(self.conflicts) if (e := self._read(p)) is not None]

    def failures(self) -> list[SpoolEntry]:
        """Snapshots the server failed to take ``MAX_ATTEMPTS`` times: they wait for the
        user (``retry``), with the server's last error."""
        return [e for p in self._paths(self.failed) if (e := self._read(p)) is not None]

    def __len__(self) -> int:
        return len(self._paths(self.directory))

    def size(self) -> int:
        """Bytes used by the spool, conflicts and failures included."""
        total = 0
        for path in (
            self._paths(self.directory) + self._paths(self.conflicts) + self._paths(self.failed)
        ):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def remove(self, entry: SpoolEntry) -> None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()

    def set_aside(self, entry: SpoolEntry) -> Path:
        """Move a refused snapshot to ``conflicts/``."""
        self.conflicts.mkdir(parents=True, exist_ok=True)
        target = self.conflicts / entry.path.name
        with contextlib.suppress(FileNotFoundError):  # another process set it aside first
            os.replace(entry.path, target)
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

    def retry_failed(self) -> list[SpoolEntry]:
        """Move every snapshot of ``failed/`` back to the waiting ones, its count of
        attempts reset; returns them."""
        moved = []
        for entry in self.failures():
            temp = _write_temp(self.directory, entry._record(attempts=0, error=""))
            os.replace(temp, self.directory / entry.path.name)
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
            moved.append(entry)
        if moved:
            _fsync_dir(self.directory)
        return moved


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
