"""State rows kept as deltas from an earlier whole state of the same generator.

A run that snapshots every step puts nearly the same states again and again: an unchanged
key with a new index, a DataLoader state one batch on, a PCG64 state a few hundred draws
on. Backends keep such a state (its row still keyed by the SHA-256 of its canonical entry)
as a delta from a *base*, the last state of the same run, rank and generator kept whole,
encoded by ``rngvault._delta.Chain``: ``base`` names the base row and ``how`` holds the
delta's form and key advance (``encode_how``). A whole row has no base; its ``how`` is
"z" where it is kept compressed (raw DEFLATE, where that is smaller), else none.

The encoders live in the backend instance (``Chains``): after a restart, or on another
replica, a generator's first state is stored whole and becomes its base. A base is only
ever a row the backend has just inserted whole, so a delta's base is always whole.

Reading rebuilds the state from its base (a small cache of whole bases, ``Bases``) and
checks it against its SHA-256: a delta that does not rebuild its state is a StoreError
naming the state, never wrong bytes. Deletes free a whole row only once no delta is based
on it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from rngvault import _delta
from rngvault._errors import StoreError
from rngvault._snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Row:
    """A state row to insert: whole (``base`` and ``how`` None) or a delta.

    Attributes:
        hash: SHA-256 of the state entry.
        data: the entry's bytes (whole), compressed (whole, ``how`` "z") or the delta.
        base: the base row's reference (a row id, or its hash) for a delta.
        how: the delta's form and key advance (``encode_how``) for a delta; "z" for a
            compressed whole row.
        generator: the generator whose state it is (None: not one a chain follows).
        state: the entry's bytes, for a whole row (a base for the next deltas).
    """

    hash: bytes
    data: bytes
    base: Any = None
    how: str | None = None
    generator: str | None = None
    state: bytes | None = None


COMPRESSED = "z"  # ``how`` of a whole row kept compressed
SERVER_DISTANCE = 1 << 24
"""How far (MT19937 outputs) a state may be ahead of its base here: a GET that rebuilds it
takes up to about 40 ms, a quarter of what the local store's bound allows."""


def whole_row(digest: bytes, blob: bytes, generator: str | None = None) -> Row:
    """A row keeping ``blob`` whole: compressed where that is smaller."""
    packed = _delta.compress(blob)
    if len(packed) < len(blob):
        return Row(digest, packed, how=COMPRESSED, generator=generator, state=blob)
    return Row(digest, blob, generator=generator, state=blob)


def encode_how(form: str, how: list[Any] | None) -> str:
    """A delta's ``how`` column: its form, then its key advance as JSON if it has one (rows
    stored before hold ``[form, how]`` as JSON)."""
    return form if how is None else form + json.dumps(how, separators=(",", ":"))


def decode_how(text: str) -> tuple[str, list[Any] | None]:
    """(form, key advance) of a ``how`` column; ValueError for one that is not such."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"invalid delta description {text!r}")
    if text.startswith("["):
        form, how = json.loads(text)
    else:
        form, how = text[:1], json.loads(text[1:]) if len(text) > 1 else None
    if not isinstance(form, str) or not (how is None or isinstance(how, list)):
        raise ValueError(f"invalid delta description {text!r}")
    return form, how


class Chains:
    """The delta encoders of the generators a backend stores states of, by (where,
    generator), ``where`` naming the run and rank. Not thread-safe: the SQLite writer uses
    it from one job at a time; the PostgreSQL backend under its lock."""

    MAX = 10_000

    def __init__(self) -> None:
        self._chains: dict[tuple[Hashable, str], tuple[Any, _delta.Chain]] = {}

    def clear(self) -> None:
        """Forget every chain (rows they rest on may be gone): next states are whole."""
        self._chains.clear()

    def drop(self, where: Hashable) -> None:
        """Forget the chains of one run and rank."""
        for chain_key in [k for k in self._chains if k[0] == where]:
            del self._chains[chain_key]

    def encode(
        self,
        where: Hashable,
        generator: str | None,
        blob: bytes,
        digest: bytes,
        snapshot: Snapshot | None,
    ) -> Row:
        """The row for a new state ``blob`` of ``generator``: a delta from the chain's base
        where one fits, else whole (``rebase`` it once it is stored)."""
        if snapshot is None or generator is None:
            return whole_row(digest, blob)
        state = snapshot.states.get(generator)
        found = self._chains.get((where, generator))
        if state is None or found is None:
            return whole_row(digest, blob, generator)
        base, chain = found
        delta = chain.encode(blob, state.family, state.fields)
        if delta is None:
            return whole_row(digest, blob, generator)
        how, form, data = delta
        return Row(digest, data, base, encode_how(form, how))

    def rebase(self, where: Hashable, row: Row, base: Any, snapshot: Snapshot | None) -> None:
        """Make a whole row just inserted (as ``base``) its generator's base."""
        if snapshot is None or row.generator is None or row.state is None:
            return
        state = snapshot.states.get(row.generator)
        if state is None:
            return
        chain_key = (where, row.generator)
        found = self._chains.get(chain_key)
        if found is None:
            if len(self._chains) >= self.MAX:
                self._chains.clear()
            self._chains[chain_key] = (
                base,
                _delta.Chain(row.state, state.family, state.fields, max_distance=SERVER_DISTANCE),
            )
        else:
            found[1].rebase(row.state, state.family, state.fields)
            self._chains[chain_key] = (base, found[1])


class Bases:
    """A small, thread-safe cache of whole base states by hash (readers share it)."""

    MAX = 64

    def __init__(self) -> None:
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> bytes | None:
        with self._lock:
            found = self._cache.get(digest)
            if found is not None:
                self._cache.move_to_end(digest)
            return found

    def put(self, digest: bytes, data: bytes) -> None:
        with self._lock:
            self._cache[digest] = data
            if len(self._cache) > self.MAX:
                self._cache.popitem(last=False)


def whole(digest: bytes, data: bytes, how: str | None) -> bytes:
    """A whole row's state: its bytes, or decompressed (``how`` "z"), checked against its
    SHA-256 ``digest``."""
    if how is None:
        if hashlib.sha256(data).digest() != digest:
            raise StoreError(f"state {digest.hex()} is corrupt (its SHA-256 does not match)")
        return data
    if how != COMPRESSED:
        raise StoreError(f"state {digest.hex()} is neither whole nor a delta with a base")
    try:
        state = _delta.decompress(data)
    except ValueError as exc:
        raise StoreError(f"state {digest.hex()} does not decompress: {exc}") from None
    if hashlib.sha256(state).digest() != digest:
        raise StoreError(f"state {digest.hex()} is corrupt (its SHA-256 does not match)")
    return state


def whole_base(digest: bytes, data: bytes, base_of_base: object, how: str | None = None) -> bytes:
    """A base row's bytes, checked: whole, and its SHA-256 ``digest``."""
    if base_of_base is not None:
        raise StoreError(f"state {digest.hex()} is a delta, not a whole base state")
    if how is not None:
        return whole(digest, data, how)
    if hashlib.sha256(data).digest() != digest:
        raise StoreError(f"base state {digest.hex()} is corrupt (its SHA-256 does not match)")
    return data


def rebuild(digest: bytes, data: bytes, how: str, base: bytes) -> bytes:
    """A delta row's state from its whole base, checked against its SHA-256 ``digest``."""
    try:
        form, key_how = decode_how(how)
        state = _delta.rebuild(base, key_how, form, data)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"state {digest.hex()} cannot be rebuilt from its base: {exc}") from None
    if hashlib.sha256(state).digest() != digest:
        raise StoreError(f"state {digest.hex()} rebuilt from its base is corrupt")
    return state
