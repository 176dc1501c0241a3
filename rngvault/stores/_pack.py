"""A pack: the snapshots of one run and rank that recorded a step, appended to one file.

A snapshot at every step would cost a file system at least a block per file; a pack keeps
them in one append-only file, each snapshot a few hundred bytes:

    ROOT/runs/NAMESPACE/RUN/.steps/rank-R.pack

    MAGIC, then records: u32 length, u32 CRC-32 of the stored bytes, the stored bytes

A record's stored bytes are raw DEFLATE of a msgpack map, compressed against the pack's
first record (whose bytes repeat in every later one: the environment, the generator names,
the field names): ``{"n": name, "s": the snapshot's length, "g": its generators' families
(the rest of its listing info is read from its own bytes), "k":
[the bytes before the states, [[a generator's encoded name, its state's SHA-256], ...], the
bytes after], "b": the states this record adds}``. Each state is added once per pack, keyed
by the SHA-256 of its encoding: ``[hash, None, None, "w", bytes]`` whole, or ``[hash, base
hash, how, form, delta]`` as a delta from an earlier whole state of the same generator
(``rngvault._delta``).

Appends take an exclusive ``flock`` on the file, so processes sharing a run and rank append
in turn. A record that a crash cut short is the file's tail: readers stop before it and the
next append cuts it off. A complete record that fails its CRC is damage: it and what
follows are not read, and appends are refused. Records are fsynced together: by ``sync()``,
by an append asked to be durable, and at least every ``SYNC_INTERVAL`` seconds of appends.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from rngvault import _delta
from rngvault._codec import EXT_BIGINT, decode_bigint
from rngvault._errors import RngVaultError, StoreError
from rngvault._snapshot import Snapshot
from rngvault._split import split
from rngvault.stores.base import SnapshotInfo

try:
    import fcntl
except ImportError:  # Windows: LocalStore keeps every snapshot in its own file there
    fcntl = None  # type: ignore[assignment]

AVAILABLE = fcntl is not None
MAGIC = b"RVPACK1\n"
SYNC_INTERVAL = 1.0
MAX_RECORD = 8 << 20  # bytes; a longer length field is damage
_HEAD = struct.Struct("<II")


@dataclass(frozen=True, slots=True)
class Record:
    """Where one snapshot is in a pack, and what listing it needs.

    Attributes:
        offset: the record's header offset.
        length: the stored bytes' length.
        name: the snapshot's name.
        size: their length.
        step: its step.
        digest: its states digest.
        created: when it was taken.
    """

    offset: int
    length: int
    name: str
    size: int
    step: int | None
    digest: str
    created: float


class Pack:
    """One run and rank's pack file. Safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, Record] = {}
        self.order: list[Record] = []
        self._blobs: dict[bytes, tuple[int, int, int]] = {}  # hash -> (offset, length, item)
        self._end = 0  # end of the last valid record read
        self._damage: str | None = None
        self._dictionary: bytes | None = None  # the first record's payload
        self._chains: dict[str, tuple[bytes, _delta.Chain]] = {}  # generator -> base hash
        self._payloads: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._wholes: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._pid = os.getpid()
        self._unsynced = False
        self._synced_at = time.monotonic()
        self._timer: threading.Timer | None = None
        _PACKS.add(self)

    # -- reading ----------------------------------------------------------------------

    @property
    def damage(self) -> str | None:
        """What is wrong with the file, if a record in it is damaged (the records before
        it are read; none after it)."""
        return self._damage

    def refresh(self) -> None:
        """Read the records appended since the last look (by any process)."""
        with self._lock:
            try:
                with open(self.path, "rb") as fh:
                    self._scan(fh)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StoreError(f"cannot read {self.path}: {exc}") from exc

    def _scan(self, fh: Any) -> None:
        if self._damage is not None:
            return
        if self._end == 0:
            if fh.read(len(MAGIC)) != MAGIC:
                fh.seek(0, os.SEEK_END)
                if fh.tell() >= len(MAGIC):
                    self._damage = f"{self.path} is not a snapshot pack"
                return
            self._end = len(MAGIC)
        fh.seek(self._end)
        while True:
            head = fh.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return  # the end, or a record being written
            length, crc = _HEAD.unpack(head)
            problem = None
            if length == 0 or length > MAX_RECORD:
                problem = f"a record at byte {self._end} claims {length} bytes"
            else:
                stored = fh.read(length)
                if len(stored) < length:
                    return  # cut short (a crash, or an append in progress)
                if zlib.crc32(stored) != crc:
                    problem = f"the record at byte {self._end} is damaged"
                else:
                    try:
                        payload = self._payload_of(self._end, stored)
                        self._index(self._end, length, payload)
                    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
                        problem = f"the record at byte {self._end} is unreadable: {exc}"
            if problem is not None:
                if not self._torn(fh, length):
                    self._damage = f"{self.path}: {problem}"
                return
            self._end += _HEAD.size + length

    def _torn(self, fh: Any, length: int) -> bool:
        """Whether a bad record at ``self._end`` is the file's torn tail (what a crash
        leaves of an append: the last record, or zeros to the end), not damage."""
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if self._end + _HEAD.size + length >= size:
            return True
        fh.seek(self._end)
        while chunk := fh.read(1 << 20):
            if chunk.strip(b"\0"):
                return False
        return True

    def _payload_of(self, offset: int, stored: bytes) -> dict[str, Any]:
        first = offset == len(MAGIC)
        if first:
            raw = _delta.decompress(stored, b"", MAX_RECORD)
            self._dictionary = raw
        else:
            if self._dictionary is None:
                raise ValueError("the pack's first record is missing")
            raw = _delta.decompress(stored, self._dictionary, MAX_RECORD)
        payload = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        if not isinstance(payload, dict):
            raise ValueError("a record is not a map")
        return payload

    def _index(self, offset: int, length: int, payload: dict[str, Any]) -> None:
        """Index a record read from the file, its shape checked (ValueError otherwise), so
        that reading it later meets only the types written."""
        generators, skeleton, states = payload.get("g"), payload.get("k"), payload.get("b")
        if not isinstance(skeleton, list) or not _skeleton(skeleton):
            raise ValueError("a record without its skeleton")
        if not isinstance(generators, dict):
            raise ValueError("a record without its generators")
        info = _listing(skeleton[0])
        if not isinstance(states, list) or not all(map(_state_item, states)):
            raise ValueError("a record's states are not [hash, base, how, form, data] items")
        step, created, size = info.get("step"), info.get("created"), payload.get("s")
        if step is not None and not _is_int(step):
            raise ValueError(f"step {step!r:.40}")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            raise ValueError(f"created {created!r:.40}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"size {size!r:.40}")
        record = Record(
            offset=offset,
            length=length,
            name=_text(payload.get("n")),
            size=size,
            step=step,
            digest=_text(info.get("digest")),
            created=float(created),
        )
        for position, item in enumerate(states):
            self._blobs.setdefault(item[0], (offset, length, position))
        if record.name not in self.records:  # the first record of a name is the one kept
            self.records[record.name] = record
            self.order.append(record)

    def _load(self, offset: int, length: int) -> dict[str, Any]:
        """A record's payload, from a small cache or the file."""
        cached = self._payloads.get(offset)
        if cached is not None:
            self._payloads.move_to_end(offset)
            return cached
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset + _HEAD.size)
                stored = fh.read(length)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        try:
            payload = self._payload_of(offset, stored)
        except (ValueError, msgpack.UnpackException) as exc:
            raise StoreError(
                f"{self.path}: the record at byte {offset} is unreadable: {exc}"
            ) from None
        self._payloads[offset] = payload
        if len(self._payloads) > 16:
            self._payloads.popitem(last=False)
        return payload

    def info(self, record: Record) -> dict[str, Any]:
        """A record's listing info (``SnapshotInfo.to_dict``'s keys but run, name, ranks
        and size), from the snapshot's own bytes and the generators kept with it."""
        with self._lock:
            payload = self._load(record.offset, record.length)
        try:
            return {**_listing(payload["k"][0]), "generators": dict(payload["g"])}
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StoreError(f"{self.path}: snapshot {record.name!r} is damaged: {exc}") from None

    def read(self, record: Record) -> bytes:
        """The snapshot's bytes, rebuilt: each state checked against its SHA-256, the rest
        against the record's CRC, the whole against its length."""
        with self._lock:
            prefix, entries, suffix = self._load(record.offset, record.length)["k"]
            parts, total = [prefix], len(prefix) + len(suffix)
            seen: dict[bytes, bytes] = {}
            for encoded, key in entries:
                blob = seen.get(key)
                if blob is None:
                    blob = seen[key] = self._blob(key.hex())
                total += len(encoded) + len(blob)
                if total > record.size:  # never assemble more than the record says
                    break
                parts += [encoded, blob]
            parts.append(suffix)
        if total != record.size:
            raise StoreError(f"{self.path}: snapshot {record.name!r} is corrupt")
        return b"".join(parts)

    def state_hash(self, record: Record, generator: str) -> str | None:
        """The state hash of ``generator`` in a record's snapshot (None: no such state)."""
        with self._lock:
            _prefix, entries, _suffix = self._load(record.offset, record.length)["k"]
        wanted = msgpack.packb(generator)
        for encoded, key in entries:
            if encoded == wanted:
                return str(key.hex())
        return None

    def _blob(self, hex_digest: str) -> bytes:
        key = bytes.fromhex(hex_digest)
        found = self._blobs.get(key)
        if found is None:
            raise StoreError(f"{self.path}: state {hex_digest} is missing")
        offset, length, position = found
        item = self._load(offset, length)["b"][position]
        _hash, base, how, form, data = item
        if form == "w":
            blob = _bin(data)
        else:
            whole = self._whole(_bin(base))
            try:
                blob = _delta.rebuild(whole, how, form, _bin(data))
            except ValueError as exc:
                raise StoreError(
                    f"{self.path}: state {hex_digest} cannot be rebuilt: {exc}"
                ) from None
        if hashlib.sha256(blob).digest() != key:
            raise StoreError(f"{self.path}: state {hex_digest} is corrupt")
        return blob

    def _whole(self, key: bytes) -> bytes:
        """A base state (kept whole in the pack), from a small cache."""
        cached = self._wholes.get(key)
        if cached is None:
            found = self._blobs.get(key)
            if found is None or self._load(found[0], found[1])["b"][found[2]][3] != "w":
                raise StoreError(f"{self.path}: base state {key.hex()} is not kept whole")
            cached = self._blob(key.hex())
            self._wholes[key] = cached
            if len(self._wholes) > 64:
                self._wholes.popitem(last=False)
        return cached

    # -- writing ----------------------------------------------------------------------

    def append(
        self,
        items: Sequence[tuple[str, bytes, Snapshot, SnapshotInfo]],
        elsewhere: Callable[[str], bool],
        durable: bool,
    ) -> list[bool | str | RngVaultError]:
        """Append snapshots (name, bytes, snapshot, info) under the file's lock. For each:
        True (appended), False (this pack holds these very bytes under the name), "pack"
        (it holds other bytes under the name), "file" (``elsewhere(name)``: the store
        keeps the name outside the pack), or the error that item met; the caller decides
        whether "pack" and "file" are the same snapshot. Durable on return if ``durable``."""
        if fcntl is None:
            raise StoreError("packs need fcntl (POSIX)")
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                return self._append_locked(fd, items, elsewhere, durable)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        if self._fd is not None and self._pid != os.getpid():
            self._after_fork()
        if self._fd is None:
            created = [p for p in (self.path.parent, *self.path.parents[:3]) if not p.exists()]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            try:
                self._fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644
                )
            except OSError as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            self._pid = os.getpid()
            if fresh:  # the new file's name, and any folder made for it, reach the disk
                for directory in [self.path.parent, *(p.parent for p in created)]:
                    _fsync_dir(directory)
        return self._fd

    def _after_fork(self) -> None:
        """In a forked child: the parent's descriptor (and with it the parent's flock) is
        not ours; drop it without unlocking, and start with a lock of our own."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._lock = threading.RLock()
        self._unsynced = False
        self._timer = None
        self._chains.clear()

    def _append_locked(
        self,
        fd: int,
        items: Sequence[tuple[str, bytes, Snapshot, SnapshotInfo]],
        elsewhere: Callable[[str], bool],
        durable: bool,
    ) -> list[bool | str | RngVaultError]:
        self.refresh()
        if self._damage is not None:
            raise StoreError(f"{self._damage}; not appending to it")
        size = os.fstat(fd).st_size
        if size < len(MAGIC):
            os.ftruncate(fd, 0)
            os.pwrite(fd, MAGIC, 0)
            self._end = len(MAGIC)
        elif size > self._end:  # what a crash left of an append: cut it off
            os.ftruncate(fd, self._end)
        results: list[bool | str | RngVaultError] = []
        chunks: list[bytes] = []
        added: dict[str, Record] = {}
        try:
            for item in items:
                results.append(self._add(item, elsewhere, added, chunks))
            if chunks:
                blob = b"".join(chunks)
                written = os.pwrite(fd, blob, self._end)
                if written != len(blob):
                    raise OSError(f"short write ({written} of {len(blob)} bytes)")
        except BaseException as exc:
            if chunks:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._end)
            self._forget(added)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot append to {self.path}: {exc}") from exc
            raise
        for record in added.values():
            self.records[record.name] = record
            self.order.append(record)
        if chunks:
            self._end += sum(map(len, chunks))
            self._unsynced = True
        if durable or (self._unsynced and time.monotonic() - self._synced_at >= SYNC_INTERVAL):
            self._sync_fd(fd)  # durable: even for a record another process appended
        elif self._unsynced:
            self._sync_later()
        return results

    def _add(
        self,
        item: tuple[str, bytes, Snapshot, SnapshotInfo],
        elsewhere: Callable[[str], bool],
        added: dict[str, Record],
        chunks: list[bytes],
    ) -> bool | str | RngVaultError:
        """One item of an append: its outcome, its record queued in ``chunks``."""
        name, data, snapshot, info = item
        known = self.records.get(name) or added.get(name)
        if known is not None:
            try:
                same = known.name not in added and self.read(known) == data
            except StoreError:
                same = False
            return False if same else "pack"
        if elsewhere(name):
            return "file"
        position = self._end + sum(map(len, chunks))
        try:
            payload = self._payload(name, data, snapshot, info)
        except RngVaultError as exc:
            self._chains.clear()  # a chain may have moved to a state not written
            return exc
        raw = msgpack.packb(payload, use_bin_type=True)
        if position == len(MAGIC):
            stored = _delta.compress(raw)
            self._dictionary = raw
        else:
            assert self._dictionary is not None
            stored = _delta.compress(raw, self._dictionary)
        chunks.append(_HEAD.pack(len(stored), zlib.crc32(stored)) + stored)
        for index, state in enumerate(payload["b"]):
            self._blobs.setdefault(state[0], (position, len(stored), index))
        added[name] = Record(
            position, len(stored), name, len(data), info.step, info.digest, info.created
        )
        return True

    def _sync_later(self) -> None:
        """Sync within ``SYNC_INTERVAL`` even if nothing else is appended."""
        if self._timer is None:
            self._timer = threading.Timer(SYNC_INTERVAL, self._timed_sync)
            self._timer.daemon = True
            self._timer.start()

    def _timed_sync(self) -> None:
        with self._lock:
            self._timer = None
            if self._pid != os.getpid():
                return
            with contextlib.suppress(StoreError):  # the next append, flush() or close()
                self.sync()  # syncs again and reports it

    def _forget(self, added: dict[str, Record]) -> None:
        """Undo what records that were not written added: their states' index entries,
        the chains (their bases may be among them), the dictionary if it was the first."""
        for key in [k for k, (offset, _l, _p) in self._blobs.items() if offset >= self._end]:
            del self._blobs[key]
        self._chains.clear()
        if self._end <= len(MAGIC):
            self._dictionary = None

    def _payload(
        self, name: str, data: bytes, snapshot: Snapshot, info: SnapshotInfo
    ) -> dict[str, Any]:
        """A record's map: each state the pack does not hold yet is added, as a delta from
        the generator's base where one fits, else whole (and it becomes the base)."""
        parts = split(data)
        states: list[list[Any]] = []
        adding: set[bytes] = set()
        for encoded, digest in parts.entries:
            key = bytes.fromhex(digest)
            if key in self._blobs or key in adding:
                continue
            adding.add(key)
            blob = parts.blobs[digest]
            generator = msgpack.unpackb(encoded, raw=False)
            state = snapshot.states.get(generator)
            chain = self._chains.get(generator)
            delta = None
            if state is not None and chain is not None:
                delta = chain[1].encode(blob, state.family, state.fields)
            if delta is not None and chain is not None:
                how, form, change = delta
                states.append([key, chain[0], how, form, change])
                continue
            states.append([key, None, None, "w", blob])
            if state is None:
                continue
            if chain is None:
                self._chains[generator] = (key, _delta.Chain(blob, state.family, state.fields))
            else:
                chain[1].rebase(blob, state.family, state.fields)
                self._chains[generator] = (key, chain[1])
        entries = [[encoded, bytes.fromhex(digest)] for encoded, digest in parts.entries]
        return {
            "n": name,
            "s": len(data),
            "g": dict(info.generators),
            "k": [parts.prefix, entries, parts.suffix],
            "b": states,
        }

    def sync(self) -> None:
        """Make every append so far durable."""
        with self._lock:
            if self._fd is not None and self._pid != os.getpid():
                self._after_fork()  # the parent's appends are the parent's to sync
            if self._fd is not None and self._unsynced:
                self._sync_fd(self._fd)

    def _sync_fd(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            raise StoreError(f"cannot sync {self.path}: {exc}") from exc
        self._unsynced = False
        self._synced_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._fd is not None and self._pid != os.getpid():
                self._after_fork()
            if self._fd is not None:
                try:
                    self.sync()
                finally:
                    os.close(self._fd)
                    self._fd = None


_PACKS: weakref.WeakSet[Pack] = weakref.WeakSet()


def _locks_after_fork() -> None:
    """In a forked child, every pack gets new locks: a thread of the parent may have held
    one at the fork, and no thread of the child will ever release it."""
    for pack in list(_PACKS):
        pack._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_locks_after_fork)


def _listing(prefix: bytes) -> dict[str, Any]:
    """The listing info a snapshot's bytes before its states hold: created, digest and the
    metadata's step, epoch, tags, metrics and world size (ValueError if they do not)."""
    unpacker = msgpack.Unpacker(raw=False, ext_hook=_bigint, strict_map_key=True)
    unpacker.feed(prefix)
    found: dict[str, Any] = {}
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "states":
                break
            if key in ("created", "digest", "metadata"):
                found[key] = unpacker.unpack()
            else:
                unpacker.skip()
    except msgpack.OutOfData:
        raise ValueError("the snapshot's bytes end before its states") from None
    meta = found.get("metadata")
    if not isinstance(meta, dict) or "created" not in found or "digest" not in found:
        raise ValueError("the snapshot's bytes lack created, digest or metadata")
    return {
        "created": found["created"],
        "digest": found["digest"],
        "step": meta.get("step"),
        "epoch": meta.get("epoch"),
        "tags": meta.get("tags", []),
        "metrics": meta.get("metrics", {}),
        "world_size": meta.get("world_size", 1),
    }


def _bigint(code: int, data: bytes) -> Any:
    return decode_bigint(data) if code == EXT_BIGINT else msgpack.ExtType(code, data)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _skeleton(value: object) -> bool:
    """Whether a record's "k" has the shape written."""
    if not isinstance(value, list) or len(value) != 3:
        return False
    prefix, entries, suffix = value
    return (
        isinstance(prefix, bytes)
        and isinstance(suffix, bytes)
        and isinstance(entries, list)
        and all(
            isinstance(e, list)
            and len(e) == 2
            and isinstance(e[0], bytes)
            and isinstance(e[1], bytes)
            and len(e[1]) == 32
            for e in entries
        )
    )


def _state_item(item: object) -> bool:
    """Whether a record's state item has the shape written: whole, or a delta."""
    if not isinstance(item, list) or len(item) != 5:
        return False
    key, base, how, form, data = item
    if not isinstance(key, bytes) or len(key) != 32 or not isinstance(data, bytes):
        return False
    if form == "w":
        return base is None and how is None
    return (
        form in _delta.FORMS
        and isinstance(base, bytes)
        and len(base) == 32
        and (how is None or isinstance(how, list))
    )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _bin(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"expected bytes, got {type(value).__name__}")
    return value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
