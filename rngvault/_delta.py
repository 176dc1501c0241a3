"""Generator states stored as a difference from an earlier state of the same generator.

A training loop that snapshots every step stores nearly the same states again and again: an
unchanged key with a new index, a DataLoader state with one more batch counted, a PCG64
state a few hundred draws on. Stores keep such a state as a *delta* from a *base* (an
earlier state of the same generator, kept whole):

- ``how``: for the MT19937 families (``python``, ``numpy.legacy``, ``numpy.bitgen`` over
  MT19937, ``torch.cpu``), where the base's key sits in its encoding and how many 32-bit
  outputs the state is ahead of the base. A reader advances the base's MT19937 by that
  many outputs (NumPy's MT19937, in C) and writes the key it reaches into a copy of the
  base: the *dictionary*. Other families have no ``how``: the dictionary is the base itself.
- ``data``: the state's encoding, compressed with raw DEFLATE against that dictionary. Once
  the key is right, the state differs from the dictionary in a few bytes (an index, a cached
  normal), so the delta takes tens of bytes where the state takes kilobytes.

The delta may instead list the bytes that differ (a *patch*, for a state of the
dictionary's length) or keep the ends they share (a *splice*), when that is smaller.

A reader checks the state it rebuilds against its SHA-256 (the name stores keep it under),
so a delta that does not rebuild the exact state is an error, never a wrong state.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from rngvault._distance import mt_distance

N = 624
MAX_DISTANCE = 1 << 26
"""A delta's base is at most this many MT19937 outputs behind it (advancing that far takes
about 0.2 s when the state is read back, the worst case: reading a run's steps in order
advances from the previous one); further states start a new base. A loop whose torch
dropout draws 426,000 outputs a step keeps its torch key whole every 157 steps."""
SEARCH = 1 << 20
"""How far (in outputs, each way) the encoder looks for a state that is not where the
previous step's draws predict; after a failed search (a reseed), only ``SEARCH // 64``."""

_WIDTH = {"u32": "<u4", "u64": "<u8"}


def mt_position(family: str, fields: Mapping[str, Any]) -> tuple[np.ndarray, int] | None:
    """The MT19937 key (uint32[624]) and index of a state of an MT19937 family; None for
    other families (or an MT19937 family's state in an unexpected shape)."""
    try:
        if family == "python":
            return np.asarray(fields["key"], dtype=np.uint32), int(fields["index"])
        if family == "numpy.legacy":
            return np.asarray(fields["key"], dtype=np.uint32), int(fields["pos"])
        if family == "numpy.bitgen" and fields.get("bit_generator") == "MT19937":
            inner = fields["state"]
            return np.asarray(inner["key"], dtype=np.uint32), int(inner["pos"])
        if family == "torch.cpu":
            from rngvault.families._torch import cpu_mt

            return cpu_mt(fields["state"])
    except (KeyError, TypeError, ValueError):
        return None
    return None


def key_location(family: str, blob: bytes, key: np.ndarray) -> tuple[str, int] | None:
    """Where ``key`` sits in a state's encoding ``blob``: ("u32" or "u64", byte offset) for
    a key kept as packed words, ("python", 0) for Python's key (msgpack integers); None
    when it cannot be found."""
    if family == "python":
        return "python", 0
    kind = "u64" if family == "torch.cpu" else "u32"
    offset = blob.find(key.astype(_WIDTH[kind]).tobytes())
    return (kind, offset) if offset >= 0 else None


_LOCAL = threading.local()


def _blank() -> np.random.MT19937:
    """This thread's MT19937 to set states into (making one costs more than using one)."""
    generator: np.random.MT19937 | None = getattr(_LOCAL, "generator", None)
    if generator is None:
        generator = _LOCAL.generator = np.random.MT19937(0)
    return generator


def advance(key: np.ndarray, index: int, distance: int) -> tuple[np.ndarray, int]:
    """The MT19937 (key, index) ``distance`` outputs after (key, index)."""
    generator = _blank()
    generator.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": index}}
    if distance:
        generator.random_raw(distance, output=False)
    state = generator.state["state"]
    return state["key"], int(state["pos"])


def with_key(blob: bytes, kind: str, offset: int, key: np.ndarray, index: int) -> bytes:
    """``blob`` with the MT19937 key (and, for Python, the index) replaced: the dictionary a
    delta is compressed against."""
    if kind == "python":
        entry = msgpack.unpackb(blob, raw=False)
        entry["fields"]["key"] = key.tolist()
        entry["fields"]["index"] = index
        return bytes(msgpack.packb(entry, use_bin_type=True))
    out = bytearray(blob)
    np.frombuffer(out, dtype=_WIDTH[kind], count=N, offset=offset)[:] = key
    return bytes(out)


def read_key(blob: bytes, kind: str, offset: int) -> np.ndarray:
    """The MT19937 key a base's encoding holds at a ``key_location``."""
    if kind == "python":
        return np.asarray(msgpack.unpackb(blob, raw=False)["fields"]["key"], dtype=np.uint32)
    return np.frombuffer(blob, dtype=_WIDTH[kind], count=N, offset=offset).astype(np.uint32)


def compress(data: bytes, dictionary: bytes = b"", level: int = 6) -> bytes:
    """Raw DEFLATE of ``data`` against ``dictionary``."""
    if dictionary:
        packer = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def decompress(data: bytes, dictionary: bytes = b"", limit: int = 1 << 20) -> bytes:
    """The inverse of ``compress``; ValueError for data that is not such a stream, or that
    would give more than ``limit`` bytes."""
    try:
        unpacker = (
            zlib.decompressobj(-15, zdict=dictionary) if dictionary else zlib.decompressobj(-15)
        )
        out = unpacker.decompress(data, limit)
        if unpacker.unconsumed_tail or not unpacker.eof:
            raise ValueError("truncated, or larger than allowed")
    except zlib.error as exc:
        raise ValueError(str(exc)) from None
    return out


def patch(data: bytes, dictionary: bytes) -> bytes | None:
    """``data`` as the runs of bytes where it differs from ``dictionary`` (msgpack
    ``[[offset, bytes], ...]``); None when the lengths differ."""
    if len(data) != len(dictionary):
        return None
    differs = np.flatnonzero(
        np.frombuffer(data, dtype=np.uint8) != np.frombuffer(dictionary, dtype=np.uint8)
    )
    runs: list[list[Any]] = []
    if len(differs):
        # Runs of differing bytes; gaps of up to 4 equal bytes are cheaper inside a run.
        breaks = np.flatnonzero(np.diff(differs) > 5) + 1
        for chunk in np.split(differs, breaks):
            start, end = int(chunk[0]), int(chunk[-1]) + 1
            runs.append([start, data[start:end]])
    return bytes(msgpack.packb(runs, use_bin_type=True))


def splice(data: bytes, dictionary: bytes) -> bytes:
    """``data`` as the dictionary's bytes it shares at each end and what lies between
    (msgpack ``[head, tail, middle]``): small when one place changed, lengths may differ."""
    a = np.frombuffer(data, dtype=np.uint8)
    b = np.frombuffer(dictionary, dtype=np.uint8)
    shortest = min(len(a), len(b))
    differs = np.flatnonzero(a[:shortest] != b[:shortest])
    head = int(differs[0]) if len(differs) else shortest
    room = shortest - head  # the tail may not overlap the head in either
    differs = np.flatnonzero(a[len(a) - room :][::-1] != b[len(b) - room :][::-1])
    tail = int(differs[0]) if len(differs) else room
    return bytes(msgpack.packb([head, tail, data[head : len(data) - tail]], use_bin_type=True))


def apply_splice(splice_data: bytes, dictionary: bytes) -> bytes:
    """The inverse of ``splice``; ValueError for one that does not fit the dictionary."""
    try:
        head, tail, middle = msgpack.unpackb(splice_data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a splice: {exc}") from None
    if (
        not isinstance(head, int)
        or not isinstance(tail, int)
        or not isinstance(middle, bytes)
        or head < 0
        or tail < 0
        or head + tail > len(dictionary)
    ):
        raise ValueError("a splice that does not fit the dictionary")
    return dictionary[:head] + middle + dictionary[len(dictionary) - tail :]


def apply_patch(runs_data: bytes, dictionary: bytes) -> bytes:
    """The inverse of ``patch``; ValueError for runs that do not fit the dictionary."""
    try:
        runs = msgpack.unpackb(runs_data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a patch: {exc}") from None
    if not isinstance(runs, list):
        raise ValueError("not a patch")
    out = bytearray(dictionary)
    for run in runs:
        if (
            not isinstance(run, list)
            or len(run) != 2
            or not isinstance(run[0], int)
            or not isinstance(run[1], bytes)
            or not 0 <= run[0] <= len(out) - len(run[1])
        ):
            raise ValueError("a patch run outside the dictionary")
        out[run[0] : run[0] + len(run[1])] = run[1]
    return bytes(out)


FORMS = ("p", "s", "z")
"""Delta forms: a patch of the dictionary, a splice of it, DEFLATE against it."""


def rebuild(base: bytes, how: list[Any] | None, form: str, data: bytes) -> bytes:
    """A state from its base and delta; ValueError for a delta (or base) that does not
    fit, whatever is wrong with it."""
    if form not in FORMS:
        raise ValueError(f"unknown delta form {form!r}")
    try:
        words = dictionary(base, how)
    except (TypeError, KeyError, IndexError, OverflowError, msgpack.UnpackException) as exc:
        raise ValueError(f"its base does not hold an MT19937 key there: {exc}") from None
    if form == "p":
        return apply_patch(data, words)
    if form == "s":
        return apply_splice(data, words)
    return decompress(data, words)


def dictionary(base: bytes, how: list[Any] | None) -> bytes:
    """What a delta with ``how`` (``[kind, offset, base index, distance]`` or None) was
    compressed against, rebuilt from its base's encoding."""
    if how is None:
        return base
    kind, offset, index, distance = how
    if kind not in ("python", "u32", "u64") or not isinstance(offset, int):
        raise ValueError(f"unknown key location {kind!r}")
    if not isinstance(distance, int) or not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(f"distance {distance!r} out of range")
    if not isinstance(index, int) or not 0 <= index <= N:
        raise ValueError(f"index {index!r} out of range")
    if kind != "python" and not 0 <= offset <= len(base) - N * int(kind[1:]) // 8:
        raise ValueError(f"key offset {offset} outside the base's {len(base)} bytes")
    key, position = _advanced(base, kind, offset, index, distance)
    return with_key(base, kind, offset, key, position)


_STREAMS: dict[tuple[bytes, str, int, int], tuple[int, np.ndarray, int]] = {}
_STREAMS_LOCK = threading.Lock()


def _advanced(
    base: bytes, kind: str, offset: int, index: int, distance: int
) -> tuple[np.ndarray, int]:
    """The base's MT19937 (key, index) ``distance`` outputs on. The furthest position
    reached from each recent base is kept, so reading a run's steps in order advances
    each base about one step's draws at a time rather than from the base every time."""
    start = (hashlib.sha256(base).digest(), kind, offset, index)
    with _STREAMS_LOCK:
        known = _STREAMS.get(start)
    if known is not None and known[0] <= distance:
        reached, key, position = known
        key, position = advance(key, position, distance - reached)
    else:
        key, position = advance(read_key(base, kind, offset), index, distance)
    with _STREAMS_LOCK:
        if len(_STREAMS) >= 64 and start not in _STREAMS:
            _STREAMS.pop(next(iter(_STREAMS)))
        _STREAMS[start] = (distance, key, position)
    return key, position


class Chain:
    """The delta encoder of one generator: its base and where its MT19937 stream was.

    ``max_distance`` (at most ``MAX_DISTANCE``) bounds how far a state may be ahead of its
    base, so how long rebuilding it can take. ``encode(blob, family, fields)`` returns None
    when the state should be kept whole (it
    becomes the new base: call ``rebase``), else ``(how, form, data)``: ``form`` "p" for a
    ``patch`` of the dictionary, "s" for a ``splice`` of it, "z" for DEFLATE against it,
    whichever is smallest.
    """

    __slots__ = (
        "base",
        "base_index",
        "distance",
        "family",
        "last_step",
        "location",
        "max_distance",
        "search",
        "stream",
    )

    def __init__(
        self,
        base: bytes,
        family: str,
        fields: Mapping[str, Any],
        max_distance: int = MAX_DISTANCE,
    ) -> None:
        if not 0 <= max_distance <= MAX_DISTANCE:
            raise ValueError(f"max_distance must be 0..{MAX_DISTANCE}, not {max_distance}")
        self.max_distance = max_distance
        self.search = SEARCH
        self.rebase(base, family, fields)

    def rebase(self, base: bytes, family: str, fields: Mapping[str, Any]) -> None:
        self.base = base
        self.family = family
        position = mt_position(family, fields)
        self.location = key_location(family, base, position[0]) if position else None
        self.base_index = position[1] if position else 0
        self.stream = position  # the MT19937 (key, index) of the last state encoded
        self.distance = 0  # outputs from the base to the last state
        self.last_step = 0  # outputs between the last two states

    def encode(
        self, blob: bytes, family: str, fields: Mapping[str, Any]
    ) -> tuple[list[Any] | None, str, bytes] | None:
        if family != self.family:
            return None
        how: list[Any] | None = None
        dictionary = self.base
        if self.location is not None and self.stream is not None:
            position = mt_position(family, fields)
            if position is None:
                return None
            step = self._step(position)
            if step is None or self.distance + step > self.max_distance:
                return None
            kind, offset = self.location
            how = [kind, offset, self.base_index, self.distance + step]
            dictionary = with_key(self.base, kind, offset, position[0], position[1])
            self.stream, self.distance, self.last_step = position, self.distance + step, step
        patched = patch(blob, dictionary)
        form, data = "p", patched
        if patched is None or len(patched) > 32:
            spliced = splice(blob, dictionary)
            if patched is None or len(spliced) < len(patched):
                form, data = "s", spliced
        assert data is not None
        if len(data) > 64:
            deflated = compress(blob, dictionary)
            if len(deflated) < len(data):
                form, data = "z", deflated
        if len(data) * 4 > len(blob):
            return None  # not much like the base: keep it whole
        return how, form, data

    def _step(self, position: tuple[np.ndarray, int]) -> int | None:
        """How many outputs ``position`` is ahead of the last state (None: not ahead)."""
        assert self.stream is not None
        key, index = self.stream
        if np.array_equal(key, position[0]):
            step = position[1] - index
            return step if step >= 0 else None
        if self.last_step:  # a loop draws about as much every step: try that first
            guess = advance(key, index, self.last_step)
            if guess[1] == position[1] and np.array_equal(guess[0], position[0]):
                return self.last_step
        found = mt_distance(
            (key, index), position, min(self.search, self.max_distance - self.distance)
        )
        if found is not None and found >= 0:
            # A match of outputs; the reader rebuilds (key, index) by advancing, so the
            # very same representation must come out (index 0 of a twisted key and
            # index 624 of the key before it give the same outputs).
            reached = advance(key, index, found)
            if reached[1] != position[1] or not np.array_equal(reached[0], position[0]):
                found = None
        if found is None or found < 0:
            self.search = SEARCH // 64  # reseeded, most likely: look less far next time
            return None
        self.search = SEARCH
        return found
