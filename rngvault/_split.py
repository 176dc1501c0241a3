"""Split an encoded snapshot into its generator states and the rest, and join them back.

Stores keep each generator state once, keyed by the SHA-256 of its encoding, however many
snapshots and runs hold it. ``join(split(data))`` gives back ``data`` byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgpack

from rngvault._errors import DecodeError


@dataclass(frozen=True, slots=True)
class Split:
    """An encoded snapshot taken apart.

    Attributes:
        prefix: the bytes before the first state (everything up to the states map header).
        entries: (encoded generator name, SHA-256 hex of the state's encoding) in order.
        suffix: the bytes after the last state.
        blobs: SHA-256 hex -> the state's encoding.
    """

    prefix: bytes
    entries: tuple[tuple[bytes, str], ...]
    suffix: bytes
    blobs: Mapping[str, bytes]

    def skeleton(self) -> bytes:
        """Everything but the blobs, as msgpack (what a store keeps per snapshot)."""
        return msgpack.packb([self.prefix, [list(e) for e in self.entries], self.suffix])


def state_spans(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]] | None:
    """Where the states are in an encoded snapshot: (start of the states map, its end,
    and (name start, value start, value end) for each entry); None without a states map.
    The local store and the server's backends both cut snapshots apart with it."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() != "states":
            unpacker.skip()
            continue
        start = unpacker.tell()
        spans = []
        for _ in range(unpacker.read_map_header()):
            name_start = unpacker.tell()
            unpacker.skip()
            value_start = unpacker.tell()
            unpacker.skip()
            spans.append((name_start, value_start, unpacker.tell()))
        return start, unpacker.tell(), spans
    return None


def split(data: bytes) -> Split:
    """Take an encoded snapshot (already validated by ``decode``) apart."""
    try:
        found = state_spans(data)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"cannot split the snapshot: {exc}") from None
    if found is None:
        raise DecodeError("the snapshot has no 'states' map")
    _start, end, spans = found
    entries, blobs = [], {}
    for name_start, value_start, value_end in spans:
        blob = data[value_start:value_end]
        digest = hashlib.sha256(blob).hexdigest()
        entries.append((data[name_start:value_start], digest))
        blobs[digest] = blob
    first = spans[0][0] if spans else end
    return Split(data[:first], tuple(entries), data[end:], blobs)


def join(skeleton: bytes, blob: Callable[[str], bytes], size: int | None = None) -> bytes:
    """Reassemble an encoded snapshot from its skeleton and a blob lookup (each digest
    looked up once). With ``size``, a ValueError as soon as the snapshot would pass that
    many bytes: a damaged skeleton cannot make it assemble more than it names."""
    prefix, entries, suffix = msgpack.unpackb(skeleton, raw=False)
    parts, total, seen = [prefix], len(prefix) + len(suffix), {}
    for name, digest in entries:
        if digest not in seen:
            seen[digest] = blob(digest)
        total += len(name) + len(seen[digest])
        if size is not None and total > size:
            raise ValueError(f"it names more than its {size} bytes")
        parts += [name, seen[digest]]
    parts.append(suffix)
    return b"".join(parts)


def blob_digests(skeleton: bytes) -> list[str]:
    """The state digests a skeleton refers to."""
    return [digest for _name, digest in msgpack.unpackb(skeleton, raw=False)[1]]
