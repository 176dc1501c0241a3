"""The in-memory snapshot: generator states tagged with their family, plus metadata."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from rngvault._codec import packb, states_digest

FORMAT_VERSION = 2  # the newest version written; encode writes the oldest that holds a snapshot

Scalar = int | float | str | bool


def values_equal(a: Any, b: Any, *, exact_types: bool = True) -> bool:
    """Deep equality that treats numpy arrays by value and tuples like lists; types must
    match (``1``, ``1.0`` and ``True`` differ), and NaN equals NaN (same state).

    ``exact_types=False`` lets long sequences (MT keys) be equal by ``==`` alone, for
    comparisons whose sides are known to hold the same types (a state validated, or read
    from the library, against the same generator's capture).
    """
    kind = type(a)
    if kind is type(b) and kind in _SIMPLE:  # most fields: decided without isinstance
        return bool(a == b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and (
                a.tobytes() == b.tobytes()  # the common case, at C speed
                or bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
            )
        )
    if type(a) is dict or isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(values_equal(a[k], b[k], exact_types=exact_types) for k in a)
        )
    if isinstance(a, (tuple, list)):
        if not isinstance(b, (tuple, list)) or len(a) != len(b):
            return False
        if len(a) > _LONG:  # MT keys (624 words): at C speed
            if not exact_types and _loosely_equal(a, b):
                return True
            same = _same_plain(a, b)
            if same is not None:
                return same
        return all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (bytes, bytearray)) or isinstance(b, (bytes, bytearray)):
        return isinstance(b, (bytes, bytearray)) and isinstance(a, (bytes, bytearray)) and a == b
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)  # NaN equals NaN here: same bits, same state
    return type(a) is type(b) and a == b


_LONG = 16
_INTS = {int}
_SIMPLE = frozenset({int, str, bool, bytes, type(None)})


def _loosely_equal(a: Sequence[Any], b: Sequence[Any]) -> bool:
    try:
        return bool(tuple(a) == tuple(b))
    except ValueError:  # arrays inside: compared element by element
        return False


def _same_plain(a: Sequence[Any], b: Sequence[Any]) -> bool | None:
    """For long sequences: True when their msgpack encodings match (same values and types,
    bit for bit), False when they are plain ints that differ; None when only an element by
    element comparison can tell (arrays, big ints, NaNs with other bits)."""
    try:
        if packb(a, 5 * len(a) + 8) == packb(b, 5 * len(b) + 8):
            return True
    except (TypeError, ValueError, OverflowError):
        return None
    return False if set(map(type, a)) == _INTS else None


@dataclass(frozen=True, slots=True, eq=False)
class State:
    """One generator's complete state.

    Attributes:
        family: the generator family (``"python"``, ``"numpy.bitgen"``, ``"torch.cpu"``...).
        fields: the family's fields; treat them as read-only.
    """

    family: str
    fields: Mapping[str, Any]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.family == other.family and values_equal(self.fields, other.fields)

    def __hash__(self) -> int:
        return hash(self.family)

    def describe(self) -> str:
        """A one-line summary of the generator's position (MT index, counter, offset)."""
        from rngvault.families import get_family

        family = get_family(self.family)
        if family is None:
            return f"unknown family {self.family!r}"
        return family.describe(self.fields)


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a snapshot says about the moment it was taken.

    Attributes:
        step: the training step, if given.
        epoch: the epoch, if given.
        tags: free-form labels.
        metrics: small scalar metrics (loss, accuracy...).
        rank: the process's rank in a distributed run (0 otherwise).
        world_size: the number of processes in the run (1 otherwise).
    """

    step: int | None = None
    epoch: int | None = None
    tags: tuple[str, ...] = ()
    metrics: Mapping[str, Scalar] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "tags": list(self.tags),
            "metrics": dict(self.metrics),
            "rank": self.rank,
            "world_size": self.world_size,
        }


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """A short reference to a stored snapshot, small enough to keep inside a model checkpoint.

    ``str(ref)`` is ``"namespace/run/name@<digest>"`` (``#rank`` appended for rank > 0) and
    ``SnapshotRef.parse`` reads it back; ``Vault.restore`` accepts either form and checks
    the digest, so a reference never silently restores other states.

    Attributes:
        run: ``"namespace/run"``.
        name: the snapshot's name.
        digest: the states' SHA-256 (hex).
        rank: the rank whose states it names.
    """

    run: str
    name: str
    digest: str
    rank: int = 0

    def __str__(self) -> str:
        text = f"{self.run}/{self.name}@{self.digest}"
        return text if self.rank == 0 else f"{text}#{self.rank}"

    @classmethod
    def parse(cls, text: str) -> SnapshotRef:
        """Read a reference written by ``str(ref)``."""
        from rngvault._errors import InvalidNameError
        from rngvault._names import check_name, split_run

        if not isinstance(text, str):
            raise InvalidNameError(f"a snapshot reference is a string, not {type(text).__name__}")
        head, at, tail = text.partition("@")
        digest, _hash, rank = tail.partition("#")
        parts = head.split("/")
        if (
            not at
            or len(parts) != 3
            or len(digest) != 64
            or digest.strip("0123456789abcdef")
            or (_hash and not (rank.isascii() and rank.isdigit() and len(rank) <= 9))
        ):
            raise InvalidNameError(
                f"invalid snapshot reference {text[:200]!r}: expected "
                "'namespace/run/name@<64 hex digits>', then '#<rank>' for a rank above 0"
            )
        run = "/".join(split_run("/".join(parts[:2])))
        return cls(run, check_name(parts[2]), digest, int(rank or 0))


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The states of a set of generators at one moment.

    Attributes:
        states: generator name -> ``State``.
        metadata: step, epoch, tags, metrics, rank and world size.
        environment: library versions, platform, devices and determinism flags.
        created: when it was taken, in seconds since the Unix epoch.
        probes: generator name -> the first few outputs computed from its state, when taken by
            a Vault (used to detect "same state, different numbers" across platforms).
        format_version: the snapshot format version it was written or read with.
        ref: where it is stored (run, name, digest), when it came from or went to a Vault;
            not part of the encoding.
        digest: SHA-256 (hex) of the canonical encoding of ``states`` (computed on first use,
            or the one ``rngvault.decode`` checked).
    """

    states: Mapping[str, State]
    metadata: Metadata = field(default_factory=Metadata)
    environment: Mapping[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    probes: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    ref: SnapshotRef | None = None

    @classmethod
    def _taken(cls, states: dict[str, State], metadata: Metadata) -> Snapshot:
        """A snapshot taken now, built without the dataclass __init__ (the training thread's
        hot path: this is a fifth of the cost of constructing it field by field)."""
        snapshot = object.__new__(cls)
        snapshot.__dict__.update(
            states=states,
            metadata=metadata,
            environment={},
            created=time.time(),
            probes={},
            format_version=FORMAT_VERSION,
            ref=None,
        )
        return snapshot

    @classmethod
    def _decoded(
        cls,
        states: dict[str, State],
        metadata: Metadata,
        environment: dict[str, Any],
        created: float,
        probes: dict[str, Any],
        format_version: int,
        digest: str,
    ) -> Snapshot:
        """A snapshot read by ``rngvault.decode``, with the digest it checked."""
        snapshot = object.__new__(cls)
        snapshot.__dict__.update(
            states=states,
            metadata=metadata,
            environment=environment,
            created=created,
            probes=probes,
            format_version=format_version,
            ref=None,
            digest=digest,
        )
        return snapshot

    @cached_property
    def digest(self) -> str:
        return states_digest(self.states)

    def _with(self, *, digest: str | None = None, **changes: Any) -> Snapshot:
        """A copy with ``changes`` to anything but the states, keeping the digest: the one
        given (what ``encode_with_digest`` hashed), else the one already known."""
        assert "states" not in changes, "a copy with other states has another digest"
        copy = dataclasses.replace(self, **changes)
        known = digest if digest is not None else self.__dict__.get("digest")
        if known is not None:
            copy.__dict__["digest"] = known
        return copy

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (
            self.digest == other.digest
            and self.metadata == other.metadata
            and values_equal(self.environment, other.environment)
            and self.created == other.created
        )

    def __hash__(self) -> int:
        return hash(self.digest)

    def describe(self) -> dict[str, str]:
        """Generator name -> one-line position summary."""
        return {name: state.describe() for name, state in self.states.items()}

    def __repr__(self) -> str:
        names = ", ".join(self.states)
        return f"<Snapshot {self.digest[:12]} [{names}]>"


class _TakenSnapshot(Snapshot):
    """A snapshot a Vault has just taken: its ``ref`` is known before it is stored.

    ``Vault.snapshot`` returns before the states are encoded; the reference's digest is
    computed on first use of ``ref`` (or filled in by the writer once it has encoded
    them), never on the training thread's ``snapshot()`` call.
    """

    @classmethod
    def _for(
        cls, states: dict[str, State], metadata: Metadata, run: str, name: str
    ) -> _TakenSnapshot:
        snapshot = cls._taken(states, metadata)
        snapshot.__dict__["_where"] = (run, name)
        return snapshot  # type: ignore[return-value]

    def _with(self, *, digest: str | None = None, **changes: Any) -> Snapshot:
        # A copy names its ref as known so far: copying never computes the digest.
        changes.setdefault("ref", self.__dict__.get("ref"))
        return super()._with(digest=digest, **changes)

    @property
    def ref(self) -> SnapshotRef | None:
        known: SnapshotRef | None = self.__dict__.get("ref")
        where = self.__dict__.get("_where")
        if known is None and where is not None:
            known = SnapshotRef(where[0], where[1], self.digest, self.metadata.rank)
            self.__dict__["ref"] = known
        return known

    @ref.setter
    def ref(self, value: SnapshotRef | None) -> None:  # the dataclass __init__ of a copy
        self.__dict__["ref"] = value
