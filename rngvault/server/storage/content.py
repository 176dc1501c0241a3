"""What a backend keeps for one PUT: an envelope, content-addressed state blobs, listing info;
and when a re-put of a stored name is the same snapshot.

A re-put is the same snapshot when its states and its user metadata (step, epoch, tags,
metrics, rank, world size) are those stored: ``rngvault._identity.same_snapshot``, the rule
every store applies. Its ``created`` time and environment may differ (a rerun from the same
seed): the store answers "already stored" and keeps the first bytes. Backends compare the
whole body's SHA-256 and the states digest in their transaction; only when the digests match
and the bytes do not (``SameStates``) does ``settle`` read the stored body and compare the
metadata.

Every state entry (``{"family", "fields"}``) of a body that ``decode`` accepted is in canonical
form, so one generator state has the same bytes in every snapshot of every run. Backends keep
each entry once, keyed by the SHA-256 of those bytes, and keep the rest of the body (the
envelope) with the entries cut out; ``join`` splices them back, byte for byte.

A run's entries are alike (the same metadata keys, generator names, environment), so
backends keep each one's envelope and listing info *packed*: raw DEFLATE (``pack``) against
the run's *dictionary*, the last 32 KiB (all raw DEFLATE looks back at) of the first entry
they packed of it (``dictionary``). ``columns`` gives an entry's stored form: packed, its
``info`` then ``PACKED`` and the CRC-32 of its envelope and info (checked on reading: raw
DEFLATE has none, so a damaged entry or dictionary is a StoreError, never other bytes); or,
for an entry over ``PLAIN_ABOVE`` (a huge tag), plain: its envelope and info as they are,
as every entry stored before packing is. Entries packed before the CRC have an empty
``info``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from rngvault import _delta
from rngvault._errors import ConflictError, StoreError
from rngvault._format import decode
from rngvault._identity import same_snapshot
from rngvault._snapshot import Snapshot
from rngvault._split import state_spans
from rngvault.server.storage.base import SnapshotInfo, SnapshotKey, Store, Stored

_INLINE_DECODE = 256 * 1024  # larger stored bodies are decoded off the event loop
_PACKED_LIMIT = 64 * 1024 * 1024  # an unpacked envelope and info are never larger
_DIGEST_KEY = msgpack.packb("digest") + b"\xd9\x40"  # "digest": a str8 of 64 characters
PLAIN_ABOVE = 1024 * 1024  # an entry's envelope and info larger than this are kept plain
WINDOW = 32 * 1024  # what raw DEFLATE looks back at: a dictionary is never longer
PACKED = "~"  # an ``info`` column starting with this: the entry is packed (then its CRC-32)
DICTIONARY_CACHE_BYTES = 32 * 1024 * 1024  # runs' dictionaries a backend keeps in memory


@dataclass(frozen=True, slots=True)
class Prepared:
    """One rank's snapshot, ready to store.

    Attributes:
        body_sha256: SHA-256 of the whole body (same bytes: the same snapshot, at once).
        digest: the states digest.
        size: the body's length.
        envelope: the body with every state entry cut out.
        holes: (offset in the envelope, blob hash) for each entry, in body order.
        blobs: blob hash -> entry bytes.
        generators: blob hash -> the (first) generator name it is the state of.
        info: the listing metadata as JSON text (see ``info_json``).
    """

    body_sha256: bytes
    digest: str
    size: int
    envelope: bytes
    holes: tuple[tuple[int, bytes], ...]
    blobs: Mapping[bytes, bytes]
    generators: Mapping[bytes, str]
    info: str


class SameStates(ConflictError):
    """The key holds other bytes with the same states digest: the same snapshot if the user
    metadata matches too, which ``settle`` decides (a ConflictError until it has)."""


def _conflict(key: SnapshotKey, what: str) -> str:
    return (
        f"snapshot {key.name!r} rank {key.rank} of {key.namespace}/{key.run} is already stored "
        f"with other content ({what}); snapshots are immutable: use a new name"
    )


def outcome(
    key: SnapshotKey, prepared: Prepared, stored_sha256: bytes, stored_digest: str
) -> Stored:
    """A put's answer when ``key`` is taken: not created for the same bytes; SameStates for
    the same states in other bytes; ConflictError for other states."""
    if bytes(stored_sha256) == prepared.body_sha256:
        return Stored(created=False, digest=prepared.digest, size=prepared.size)
    if stored_digest == prepared.digest:
        raise SameStates(_conflict(key, "other metadata"))
    raise ConflictError(_conflict(key, "other states"))


async def settle(store: Store, key: SnapshotKey, snapshot: Snapshot) -> Stored:
    """After SameStates: not created (the stored bytes kept) when the stored snapshot is the
    same snapshot as ``snapshot``, else ConflictError."""
    stored = await store.get(key)
    if len(stored) <= _INLINE_DECODE:
        first = decode(stored)
    else:
        first = await asyncio.to_thread(decode, stored)
    if not same_snapshot(first, snapshot):
        raise ConflictError(_conflict(key, "other metadata"))
    return Stored(created=False, digest=first.digest, size=len(stored))


def info_json(snapshot: Snapshot) -> str:
    """The listing metadata of a snapshot (Python's json keeps big ints and NaN exactly)."""
    meta = snapshot.metadata
    return json.dumps(
        {
            "created": snapshot.created,
            "step": meta.step,
            "epoch": meta.epoch,
            "metrics": dict(meta.metrics),
            "generators": [[name, state.family] for name, state in snapshot.states.items()],
            "tags": list(meta.tags),
            "world_size": meta.world_size,
        },
        separators=(",", ":"),
    )


def snapshot_info(
    name: str, stored: float, ranks: Sequence[int], digest: str, size: int, info: str
) -> SnapshotInfo:
    """A ``SnapshotInfo`` from a stored row and its ``info_json`` text (rows stored before
    the listing carried tags and world size read as none and 1)."""
    data: dict[str, Any] = json.loads(info)
    return SnapshotInfo(
        name=name,
        stored=stored,
        created=data["created"],
        ranks=tuple(ranks),
        digest=digest,
        size=size,
        step=data["step"],
        epoch=data["epoch"],
        metrics=data["metrics"],
        generators=tuple((g, f) for g, f in data["generators"]),
        tags=tuple(data.get("tags", ())),
        world_size=data.get("world_size", 1),
    )


def prepare(body: bytes, snapshot: Snapshot) -> Prepared:
    """Split a decoded, validated body into its envelope and state blobs."""
    envelope, holes, blobs, generators = _split(body)
    return Prepared(
        body_sha256=hashlib.sha256(body).digest(),
        digest=snapshot.digest,
        size=len(body),
        envelope=envelope,
        holes=holes,
        blobs=blobs,
        generators=generators,
        info=info_json(snapshot),
    )


def _split(
    body: bytes,
) -> tuple[bytes, tuple[tuple[int, bytes], ...], dict[bytes, bytes], dict[bytes, str]]:
    found = state_spans(body)
    assert found is not None, "prepare() takes bodies that decode accepted"
    _start, _end, entries = found
    parts, holes, blobs = [], [], {}
    generators: dict[bytes, str] = {}
    position = removed = 0
    for name_start, begin, finish in entries:
        entry = body[begin:finish]
        key = hashlib.sha256(entry).digest()
        blobs[key] = entry
        generators.setdefault(key, msgpack.unpackb(body[name_start:begin], raw=False))
        parts.append(body[position:begin])
        holes.append((begin - removed, key))
        removed += finish - begin
        position = finish
    parts.append(body[position:])
    return b"".join(parts), tuple(holes), blobs, generators


def join(envelope: bytes, holes: Sequence[tuple[int, bytes]]) -> bytes:
    """Splice blob bytes back into an envelope: ``holes`` is (offset, entry bytes) in order."""
    parts, position = [], 0
    for offset, data in holes:
        parts.append(envelope[position:offset])
        parts.append(data)
        position = offset
    parts.append(envelope[position:])
    return b"".join(parts)


def packs(prepared: Prepared) -> bool:
    """Whether an entry is stored packed: its envelope and info are at most ``PLAIN_ABOVE``
    bytes (a larger one, plain, needs no dictionary)."""
    return len(prepared.envelope) + len(prepared.info.encode()) <= PLAIN_ABOVE


def dictionary(prepared: Prepared) -> bytes:
    """A run's dictionary made of one of its entries: the last ``WINDOW`` bytes of its
    envelope and info as ``pack`` lays them out."""
    return msgpack.packb([prepared.envelope, prepared.info])[-WINDOW:]


def window(run_dictionary: bytes) -> bytes:
    """The part of a stored dictionary DEFLATE uses (one stored before may be longer): the
    same packed bytes, kept small in memory."""
    return run_dictionary[-WINDOW:]


def cacheable(dictionaries: Mapping[int, bytes], limit: int) -> bool:
    """Whether a cache of runs' dictionaries is within ``limit`` entries and
    ``DICTIONARY_CACHE_BYTES`` (else the backend empties it)."""
    return len(dictionaries) <= limit and (
        sum(map(len, dictionaries.values())) <= DICTIONARY_CACHE_BYTES
    )


def _crc(envelope: bytes, info: str) -> str:
    return f"{zlib.crc32(info.encode(), zlib.crc32(envelope)):08x}"


def columns(prepared: Prepared, run_dictionary: bytes | None) -> tuple[bytes, bytes, str]:
    """An entry's (body_sha256, envelope, info) columns: packed against ``run_dictionary``
    (no body hash: a re-put is compared by its states digest, then its metadata) where
    ``packs``, else plain with its body's SHA-256."""
    if run_dictionary is None or not packs(prepared):
        return prepared.body_sha256, prepared.envelope, prepared.info
    return b"", pack(prepared, run_dictionary), PACKED + _crc(prepared.envelope, prepared.info)


def pack(prepared: Prepared, run_dictionary: bytes) -> bytes:
    """The envelope and info of ``prepared``, compressed against its run's dictionary. The
    envelope's states digest, which the entry keeps anyway, is left out of it."""
    marker = _DIGEST_KEY + prepared.digest.encode()
    envelope = prepared.envelope
    at = envelope.find(marker)
    if at < 0 or envelope.find(marker, at + 1) >= 0:
        return _delta.compress(msgpack.packb([envelope, prepared.info]), run_dictionary)
    at += len(_DIGEST_KEY)
    cut = envelope[:at] + envelope[at + len(prepared.digest) :]
    return _delta.compress(msgpack.packb([cut, prepared.info, at]), run_dictionary)


def _unpacked(envelope: bytes, run_dictionary: bytes | None) -> list[Any]:
    if run_dictionary is None:
        raise StoreError("a packed snapshot entry's run has no dictionary")
    try:
        found = msgpack.unpackb(
            _delta.decompress(envelope, run_dictionary, _PACKED_LIMIT), raw=False
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StoreError(f"a packed snapshot entry does not unpack: {exc}") from None
    if (
        not isinstance(found, list)
        or len(found) not in (2, 3)
        or not isinstance(found[0], bytes)
        or not isinstance(found[1], str)
        or not found[1]
        or (len(found) == 3 and not (isinstance(found[2], int) and 0 <= found[2] <= len(found[0])))
    ):
        raise StoreError("a packed snapshot entry does not unpack: not an envelope and info")
    return found


def unpack(
    envelope: bytes, info: str, run_dictionary: bytes | None, digest: str
) -> tuple[bytes, str]:
    """An entry's envelope and info as stored: as they are, or packed against its run's
    dictionary, its states ``digest`` put back and its CRC-32 checked; StoreError for packed
    bytes that do not unpack to what was stored."""
    if info and not info.startswith(PACKED):
        return envelope, info
    found = _unpacked(envelope, run_dictionary)
    if len(found) == 2:
        whole, text = found[0], found[1]
    else:
        cut, text, at = found
        if cut[at - len(_DIGEST_KEY) : at] != _DIGEST_KEY:
            raise StoreError("a packed snapshot entry does not unpack: no digest where it was")
        whole = cut[:at] + digest.encode() + cut[at:]
    if info and info[len(PACKED) :] != _crc(whole, text):
        raise StoreError(
            "a packed snapshot entry or its run's dictionary is corrupt (its CRC-32 does not match)"
        )
    return whole, text


def unpack_info(envelope: bytes, info: str, run_dictionary: bytes | None, digest: str) -> str:
    """An entry's listing info, unpacked and checked if it was stored packed (see
    ``unpack``)."""
    return unpack(envelope, info, run_dictionary, digest)[1]


def checked(
    key: SnapshotKey,
    envelope: bytes,
    holes: Sequence[tuple[int, bytes]],
    size: int,
    body_sha256: bytes,
) -> bytes:
    """The body ``join`` gives, checked against the entry's stored size and (where stored,
    as for a plain entry) its SHA-256: StoreError naming the snapshot if it differs."""
    body = join(envelope, holes)
    if len(body) != size or (body_sha256 and hashlib.sha256(body).digest() != body_sha256):
        raise StoreError(
            f"{snapshot_label(key)}: the stored snapshot is corrupt (it does not rebuild)"
        )
    return body


def snapshot_label(key: SnapshotKey) -> str:
    """A snapshot's name, run and rank, for an error about what is stored of it."""
    return f"snapshot {key.name!r} rank {key.rank} of {key.namespace}/{key.run}"
