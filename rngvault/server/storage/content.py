"""What a backend keeps for one PUT: an envelope, content-addressed state blobs, listing info.

Every state entry (``{"family", "fields"}``) of a body that ``decode`` accepted is in canonical
form, so one generator state has the same bytes in every snapshot of every run. Backends keep
each entry once, keyed by the SHA-256 of those bytes, and keep the rest of the body (the
envelope) with the entries cut out; ``join`` splices them back, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rngvault._snapshot import Snapshot
from rngvault._split import state_spans
from rngvault.server.storage.base import SnapshotInfo


@dataclass(frozen=True, slots=True)
class Prepared:
    """One rank's snapshot, ready to store.

    Attributes:
        body_sha256: SHA-256 of the whole body (same bytes = same snapshot).
        digest: the states digest.
        size: the body's length.
        envelope: the body with every state entry cut out.
        holes: (offset in the envelope, blob hash) for each entry, in body order.
        blobs: blob hash -> entry bytes.
        info: the listing metadata as JSON text (see ``info_json``).
    """

    body_sha256: bytes
    digest: str
    size: int
    envelope: bytes
    holes: tuple[tuple[int, bytes], ...]
    blobs: Mapping[bytes, bytes]
    info: str


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
        },
        separators=(",", ":"),
    )


def snapshot_info(
    name: str, stored: float, ranks: Sequence[int], digest: str, size: int, info: str
) -> SnapshotInfo:
    """A ``SnapshotInfo`` from a stored row and its ``info_json`` text."""
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
    )


def prepare(body: bytes, snapshot: Snapshot) -> Prepared:
    """Split a decoded, validated body into its envelope and state blobs."""
    envelope, holes, blobs = _split(body)
    return Prepared(
        body_sha256=hashlib.sha256(body).digest(),
        digest=snapshot.digest,
        size=len(body),
        envelope=envelope,
        holes=holes,
        blobs=blobs,
        info=info_json(snapshot),
    )


def _split(body: bytes) -> tuple[bytes, tuple[tuple[int, bytes], ...], dict[bytes, bytes]]:
    found = state_spans(body)
    assert found is not None, "prepare() takes bodies that decode accepted"
    _start, _end, entries = found
    spans = [(begin, finish) for _name, begin, finish in entries]
    parts, holes, blobs = [], [], {}
    position = removed = 0
    for begin, finish in spans:
        entry = body[begin:finish]
        key = hashlib.sha256(entry).digest()
        blobs[key] = entry
        parts.append(body[position:begin])
        holes.append((begin - removed, key))
        removed += finish - begin
        position = finish
    parts.append(body[position:])
    return b"".join(parts), tuple(holes), blobs


def join(envelope: bytes, holes: Sequence[tuple[int, bytes]]) -> bytes:
    """Splice blob bytes back into an envelope: ``holes`` is (offset, entry bytes) in order."""
    parts, position = [], 0
    for offset, data in holes:
        parts.append(envelope[position:offset])
        parts.append(data)
        position = offset
    parts.append(envelope[position:])
    return b"".join(parts)
