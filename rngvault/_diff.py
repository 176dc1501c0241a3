"""Diff two snapshots: which generators moved, and by how many draws.

``diff(a, b)`` compares every generator name in either snapshot; ``state_distance(a, b)``
compares one pair of states. Each comparison says how far B is ahead of A, in the
generator's own unit:

=======================  ===========================  ===========================================
family                   unit                         how the distance is found
=======================  ===========================  ===========================================
PCG64, PCG64DXSM         raw 64-bit outputs           LCG jump distance (exact, 128 steps)
Philox                   raw 64-bit outputs           4 * counter + buffer_pos (exact)
SFC64                    raw 64-bit outputs           the counter word, checked by stepping
MT19937 (python,         32-bit MT outputs            index, same block; else a search of the
numpy.legacy, numpy                                   output streams, both ways, up to
MT19937, torch.cpu)                                   ``search_limit`` outputs
torch.cuda               Philox offset units          offset difference (exact)
dataloader               its generator's unit         its generator (torch.cpu), sampler epoch
=======================  ===========================  ===========================================

A raw output is one ``random_raw()`` value: what one step of the bit generator yields.

Statuses: ``unchanged`` (same stream position); ``advanced`` (B is ``distance`` outputs
ahead); ``behind`` (B is before A: ``distance`` is negative); ``reseeded`` (B is not on A's
stream: a different seed, seed sequence, PCG increment, Philox key, bit generator or
family); ``missing`` (the name is in one snapshot only); ``unknown`` (B moved, but not within
the search limit of A either way, or a state is invalid). Cached values that are not part
of the stream position (a buffered 32-bit half-word, a cached normal) are named in the
detail; when only they differ, the distance is 0 and the status ``advanced`` if B used A's
cached value, ``unknown`` if B holds one that drawing cannot leave there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rngvault._errors import StateError
from rngvault._report import table
from rngvault._snapshot import Snapshot, State, values_equal
from rngvault.convert import mt_words, torch_index
from rngvault.families import get_family, torch_cpu, torch_cuda

__all__ = ["DEFAULT_SEARCH_LIMIT", "DiffReport", "GeneratorDiff", "diff", "state_distance"]

DEFAULT_SEARCH_LIMIT = 10**7

RAW64 = "raw 64-bit outputs"
MT32 = "32-bit MT outputs"
CUDA_OFFSET = "Philox offset units"
EPOCHS = "sampler epochs"

Status = Literal["unchanged", "advanced", "behind", "reseeded", "missing", "unknown"]
# When parts of one generator (a DataLoader) disagree, the strongest status wins.
_RANK: dict[str, int] = {
    "unchanged": 0,
    "advanced": 1,
    "behind": 1,
    "unknown": 2,
    "reseeded": 3,
}

PCG64_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
PCG64_CHEAP_MULTIPLIER = 0xDA942042E4DD58B5  # PCG64DXSM steps its state with this one
_HALF_WORD = "buffered 32-bit half-word"
_NORMAL = "cached normal"


@dataclass(frozen=True, slots=True)
class GeneratorDiff:
    """How one generator differs between snapshot A and snapshot B.

    Attributes:
        name: the generator's name in the snapshots.
        family: its family (``"numpy.bitgen"``...), B's when the two differ.
        status: ``unchanged``, ``advanced``, ``behind``, ``reseeded``, ``missing`` or
            ``unknown`` (see the module docstring).
        distance: how many ``unit`` B is ahead of A (negative when behind); None when it
            cannot be known (``reseeded``, ``missing``, ``unknown``).
        unit: what ``distance`` counts: ``"raw 64-bit outputs"``, ``"32-bit MT outputs"``,
            ``"Philox offset units"`` or ``"sampler epochs"``; empty when there is none.
        detail: why, in words (buffered half-words, cached normals, seeds that differ).
    """

    name: str
    family: str
    status: Status
    distance: int | None = None
    unit: str = ""
    detail: str = ""

    @property
    def changed(self) -> bool:
        """Whether B's stream differs from A's from here on."""
        return self.status != "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "status": self.status,
            "distance": self.distance,
            "unit": self.unit,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        text = f"{self.name} ({self.family}): {self.status}"
        if self.distance is not None:
            text += f" {self.distance} {self.unit}"
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class DiffReport:
    """Per generator, how snapshot B differs from snapshot A; ``print(report)`` is a table.

    Attributes:
        entries: one ``GeneratorDiff`` per generator name in either snapshot, A's names
            first in A's order, then those only in B.
        labels: what to call A and B when printing.
    """

    entries: tuple[GeneratorDiff, ...]
    labels: tuple[str, str] = ("A", "B")

    @property
    def changed(self) -> tuple[GeneratorDiff, ...]:
        """The entries whose status is not ``unchanged``."""
        return tuple(e for e in self.entries if e.changed)

    @property
    def identical(self) -> bool:
        """Whether every generator is at the same stream position in both snapshots."""
        return not self.changed

    def __getitem__(self, name: str) -> GeneratorDiff:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def __iter__(self) -> Iterator[GeneratorDiff]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "entries": [e.to_dict() for e in self.entries]}

    def __str__(self) -> str:
        rows = [("generator", "family", "status", "distance", "unit", "detail")]
        for e in self.entries:
            distance = "-" if e.distance is None else str(e.distance)
            rows.append((e.name, e.family, e.status, distance, e.unit, e.detail))
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        head = f"diff {self.labels[0]} -> {self.labels[1]}: {summary or 'no generators'}"
        return "\n".join([head, *table(rows)]) if self.entries else head


@dataclass(frozen=True, slots=True)
class _Moved:
    status: Status
    distance: int | None = None
    unit: str = ""
    detail: str = ""


def diff(
    a: Snapshot,
    b: Snapshot,
    *,
    search_limit: int = DEFAULT_SEARCH_LIMIT,
    labels: tuple[str, str] = ("A", "B"),
) -> DiffReport:
    """Compare every generator of snapshot ``a`` with the one of the same name in ``b``.

    ``search_limit`` bounds the search for MT19937 generators that moved into another
    block of 624 words (and the stepping that checks SFC64 distances): further apart than
    that, they are ``unknown``. Searching 10**7 outputs takes about 0.1 s per direction.
    """
    for label, snapshot in zip(labels, (a, b), strict=True):
        if not isinstance(snapshot, Snapshot):
            raise StateError(f"diff compares Snapshots; {label} is a {type(snapshot).__name__}")
    names = list(a.states) + [n for n in b.states if n not in a.states]
    entries = tuple(
        state_distance(a.states.get(n), b.states.get(n), name=n, search_limit=search_limit)
        for n in names
    )
    return DiffReport(entries, labels)


def state_distance(
    a: State | None,
    b: State | None,
    *,
    name: str = "",
    search_limit: int = DEFAULT_SEARCH_LIMIT,
) -> GeneratorDiff:
    """How far state ``b`` is ahead of state ``a`` (one of them may be None: ``missing``)."""
    if type(search_limit) is not int or search_limit < 0:
        raise StateError(
            f"search_limit must be a non-negative int, got {search_limit!r}",
            field="search_limit",
            value=search_limit,
        )
    if a is None or b is None:
        if a is None and b is None:
            raise StateError("nothing to compare: both states are None", generator=name)
        present = a if a is not None else b
        assert present is not None
        where = "A" if b is None else "B"
        return GeneratorDiff(name, present.family, "missing", detail=f"only in {where}")
    moved = _compare(a, b, search_limit)
    return GeneratorDiff(name, b.family, moved.status, moved.distance, moved.unit, moved.detail)


def _compare(a: State, b: State, limit: int) -> _Moved:
    if a.family != b.family:
        return _Moved("reseeded", detail=f"replaced: A is a {a.family}, B a {b.family} generator")
    family = get_family(a.family)
    if family is None:
        return _Moved("unknown", detail=f"unknown family {a.family!r}")
    for label, state in (("A", a), ("B", b)):
        try:
            family.validate(state.fields)
        except StateError as exc:
            return _Moved("unknown", detail=f"{label}'s state is invalid: {exc}")
    if a == b:
        return _Moved("unchanged", 0, _unit(a))
    return _COMPARE[a.family](a.fields, b.fields, limit)


# -- outcome helpers -------------------------------------------------------------------------


def _signed(distance: int, modulus: int) -> int:
    """A distance modulo ``modulus`` as the signed value nearest zero (behind when negative)."""
    return distance - modulus if distance > modulus // 2 else distance


def _cache_note(what: str, a: Any, b: Any) -> str:
    """Words for a cached value (None when empty) that differs between A and B, else ""."""
    if values_equal(a, b):
        return ""
    if a is None:
        return f"B holds a {what}, A does not"
    if b is None:
        return f"A holds a {what}, B does not"
    return f"the {what} differs"


def _by_sign(distance: int, unit: str, detail: str = "") -> _Moved:
    if distance > 0:
        return _Moved("advanced", distance, unit, detail)
    if distance < 0:
        return _Moved("behind", distance, unit, detail)
    return _Moved("unchanged", 0, unit, detail)


def _moved(distance: int, unit: str, notes: list[str], cache: tuple[str, Any, Any]) -> _Moved:
    """The outcome for a known distance between states that differ, given the cached value
    (a buffered half-word, a cached normal: None when empty) that rides beside the position."""
    note = _cache_note(*cache)
    detail = "; ".join(n for n in [*notes, note] if n)
    if distance != 0:
        return _by_sign(distance, unit, detail)
    if not note:
        return _Moved(
            "unchanged", 0, unit, "; ".join([*notes, "same position, stored differently"])
        )
    what, cached_a, cached_b = cache
    if cached_a is not None and cached_b is None:
        return _Moved("advanced", 0, unit, "; ".join([*notes, f"B used A's {what}"]))
    return _Moved("unknown", None, "", f"{detail}, which drawing cannot leave at the same position")


# -- MT19937 ---------------------------------------------------------------------------------


def _mt_generator(key: np.ndarray, index: int) -> np.random.MT19937:
    generator = np.random.MT19937(0)
    generator.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": index}}
    return generator


class _StreamSearch:
    """Walks one MT19937 output stream, looking for the 624 outputs that follow another state.

    624 consecutive outputs fix every later one, so a match at offset ``d`` means the other
    state is this one after ``d`` outputs. Outputs come from NumPy's MT19937 in chunks that
    grow from 4096 to 2**20, so near states are found fast and far ones in bounded memory.
    """

    def __init__(self, start: tuple[np.ndarray, int], target: tuple[np.ndarray, int], limit: int):
        self.stream = _mt_generator(*start)
        self.target = _mt_generator(*target).random_raw(624)
        self.limit = limit
        self.tail = np.empty(0, dtype=np.uint64)
        self.offset = 0  # stream offset of tail[0]
        self.chunk = 4096
        self.done = False

    def step(self) -> int | None:
        """Search one more chunk; the distance when found (then ``done`` is set)."""
        drawn = self.offset + len(self.tail)
        count = min(self.chunk, self.limit + 624 - drawn)
        self.chunk = min(self.chunk * 2, 2**20)
        buffer = np.concatenate((self.tail, self.stream.random_raw(count)))
        starts = len(buffer) - 623  # window starts whose 624 outputs are all drawn
        for start in np.flatnonzero(buffer[:starts] == self.target[0]).tolist():
            if np.array_equal(buffer[start : start + 624], self.target):
                self.done = True
                return self.offset + start
        keep = max(starts, 0)
        self.tail = buffer[keep:]
        self.offset += keep
        self.done = self.offset + len(self.tail) >= self.limit + 624
        return None


def mt_distance(a: tuple[np.ndarray, int], b: tuple[np.ndarray, int], limit: int) -> int | None:
    """How many 32-bit outputs state ``b`` (key, index) is ahead of ``a``; None if not found.

    Within one block (same key) the answer is the index difference. Otherwise both streams
    are searched, a chunk at a time each, for up to ``limit`` outputs.
    """
    if np.array_equal(a[0], b[0]):
        return b[1] - a[1]
    forward, backward = _StreamSearch(a, b, limit), _StreamSearch(b, a, limit)
    while not (forward.done and backward.done):
        if not forward.done and (found := forward.step()) is not None:
            return found
        if not backward.done and (found := backward.step()) is not None:
            return -found
    return None


def _mt(
    a: tuple[np.ndarray, int],
    b: tuple[np.ndarray, int],
    limit: int,
    cache: tuple[str, Any, Any],
    notes: list[str] | None = None,
) -> _Moved:
    distance = mt_distance(a, b, limit)
    if distance is None:
        return _Moved(
            "unknown",
            detail=f"not within {limit} outputs of A either way: reseeded, set, or further apart",
        )
    return _moved(distance, MT32, notes or [], cache)


def _python(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _Moved:
    return _mt(mt_words(State("python", a)), mt_words(State("python", b)), limit,
               (_NORMAL, a["gauss_next"], b["gauss_next"]))  # fmt: skip


def _legacy_gauss(fields: Mapping[str, Any]) -> float | None:
    return float(fields["gauss"]) if fields["has_gauss"] else None


def _numpy_legacy(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _Moved:
    cache = (_NORMAL, _legacy_gauss(a), _legacy_gauss(b))
    return _mt(mt_words(State("numpy.legacy", a)), mt_words(State("numpy.legacy", b)), limit, cache)


_TORCH_NORMALS = slice(5016, torch_cpu.STATE_SIZE)  # double and float normal caches


def _torch_normals(state: bytes) -> bytes | None:
    p = torch_cpu.parse(state)
    return state[_TORCH_NORMALS] if p["normal_is_valid"] or p["float_normal_is_valid"] else None


def _torch_cpu_bytes(a: bytes, b: bytes, limit: int) -> _Moved:
    seed_a, seed_b = torch_cpu.parse(a)["seed"], torch_cpu.parse(b)["seed"]
    if seed_a != seed_b:
        return _Moved("reseeded", detail=f"seed {seed_a} -> {seed_b}")
    try:
        index_a, index_b = torch_index(a), torch_index(b)
    except StateError as exc:
        return _Moved("unknown", detail=str(exc))
    words_a = torch_cpu.parse(a)["words"].astype(np.uint32)
    words_b = torch_cpu.parse(b)["words"].astype(np.uint32)
    cache = (_NORMAL, _torch_normals(a), _torch_normals(b))
    return _mt((words_a, index_a), (words_b, index_b), limit, cache)


def _torch_cpu(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _Moved:
    return _torch_cpu_bytes(a["state"], b["state"], limit)


# -- NumPy bit generators -------------------------------------------------------------------


def _seed_seq_key(seq: Mapping[str, Any] | None) -> Any:
    """What identifies a seed sequence's stream (children spawned do not change it)."""
    if seq is None:
        return None
    entropy = seq["entropy"]
    entropy = tuple(entropy) if isinstance(entropy, (tuple, list)) else entropy
    return entropy, tuple(seq["spawn_key"]), seq["pool_size"]


def _show_seed_seq(seq: Mapping[str, Any] | None) -> str:
    if seq is None:
        return "none"
    text = f"entropy {seq['entropy']}"
    return text + (f" spawn_key {tuple(seq['spawn_key'])}" if seq["spawn_key"] else "")


def _half_word(fields: Mapping[str, Any]) -> int | None:
    return int(fields["uinteger"]) if fields["has_uint32"] else None


def lcg_distance(start: int, end: int, multiplier: int, increment: int, bits: int = 128) -> int:
    """Steps of ``x -> multiplier * x + increment (mod 2**bits)`` from ``start`` to ``end``.

    Brown's jump-distance algorithm, as in PCG's ``distance()``: fix one bit of the distance
    per round, squaring the step each time; ``bits`` rounds at most. Needs a full-period
    LCG (odd increment, multiplier = 1 mod 4), which NumPy's PCG generators are.
    """
    mask = (1 << bits) - 1
    distance, bit = 0, 1
    while (start ^ end) & mask:
        if bit > mask:
            raise ValueError("the states are not on one cycle of this LCG")
        if (start ^ end) & bit:
            start = (start * multiplier + increment) & mask
            distance |= bit
        increment = ((multiplier + 1) * increment) & mask
        multiplier = (multiplier * multiplier) & mask
        bit <<= 1
    return distance


def _pcg(a: Mapping[str, Any], b: Mapping[str, Any], name: str, limit: int) -> _Moved:
    inc_a, inc_b = a["state"]["inc"], b["state"]["inc"]
    if inc_a != inc_b:
        return _Moved("reseeded", detail=f"{name} increment (stream) differs")
    multiplier = PCG64_MULTIPLIER if name == "PCG64" else PCG64_CHEAP_MULTIPLIER
    try:
        steps = lcg_distance(a["state"]["state"], b["state"]["state"], multiplier, inc_a)
    except ValueError:
        return _Moved("unknown", detail=f"{name} states not on one cycle (even increment)")
    return _moved(_signed(steps, 2**128), RAW64, [name], (_HALF_WORD, _half_word(a), _half_word(b)))


def _philox_position(fields: Mapping[str, Any]) -> int:
    counter = sum(int(word) << (64 * i) for i, word in enumerate(fields["state"]["counter"]))
    # Each counter value yields 4 outputs; buffer_pos of them are already used.
    return 4 * counter + int(fields["buffer_pos"])


def _philox(a: Mapping[str, Any], b: Mapping[str, Any], name: str, limit: int) -> _Moved:
    if not np.array_equal(a["state"]["key"], b["state"]["key"]):
        return _Moved("reseeded", detail="Philox key differs")
    distance = _signed((_philox_position(b) - _philox_position(a)) % 2**258, 2**258)
    if distance == 0 and not np.array_equal(_next_outputs(a, 8), _next_outputs(b, 8)):
        # Same position, yet other buffered outputs: only a state set by hand does that.
        return _Moved("unknown", detail="Philox at the same position with other buffered outputs")
    return _moved(distance, RAW64, [name], (_HALF_WORD, _half_word(a), _half_word(b)))


def _next_outputs(fields: Mapping[str, Any], count: int) -> np.ndarray:
    """The next ``count`` raw outputs of a NumPy bit generator state."""
    generator = getattr(np.random, fields["bit_generator"])(0)
    generator.state = {k: v for k, v in fields.items() if k != "seed_seq"}
    return generator.random_raw(count)


def _sfc64(a: Mapping[str, Any], b: Mapping[str, Any], name: str, limit: int) -> _Moved:
    words_a, words_b = a["state"]["state"], b["state"]["state"]
    distance = _signed((int(words_b[3]) - int(words_a[3])) % 2**64, 2**64)
    notes = [name]
    if abs(distance) > limit:
        notes.append(f"from the counter; not checked by stepping, over {limit} outputs")
    else:
        early, late = (words_a, words_b) if distance >= 0 else (words_b, words_a)
        stepped = np.random.SFC64(0)
        stepped.state = {"bit_generator": "SFC64", "state": {"state": early}, "has_uint32": 0,
                         "uinteger": 0}  # fmt: skip
        for done in range(0, abs(distance), 2**20):
            stepped.random_raw(min(2**20, abs(distance) - done))
        if not np.array_equal(stepped.state["state"]["state"], late):
            return _Moved(
                "unknown",
                detail=f"SFC64 counter moved {distance} but the other state words do not follow",
            )
    return _moved(distance, RAW64, notes, (_HALF_WORD, _half_word(a), _half_word(b)))


def _mt19937(a: Mapping[str, Any], b: Mapping[str, Any], name: str, limit: int) -> _Moved:
    return _mt(mt_words(State("numpy.bitgen", a)), mt_words(State("numpy.bitgen", b)), limit,
               (_HALF_WORD, None, None), [name])  # fmt: skip


_BIT_GENERATORS = {
    "PCG64": _pcg,
    "PCG64DXSM": _pcg,
    "Philox": _philox,
    "SFC64": _sfc64,
    "MT19937": _mt19937,
}


def _numpy_bitgen(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _Moved:
    name = a["bit_generator"]
    if name != b["bit_generator"]:
        return _Moved("reseeded", detail=f"bit generator {name} -> {b['bit_generator']}")
    seq_a, seq_b = a["seed_seq"], b["seed_seq"]
    if _seed_seq_key(seq_a) != _seed_seq_key(seq_b):
        seeds = f"{_show_seed_seq(seq_a)} -> {_show_seed_seq(seq_b)}"
        return _Moved("reseeded", detail=f"{name} seed sequence {seeds}")
    if values_equal({**a, "seed_seq": None}, {**b, "seed_seq": None}):
        moved = _Moved("unchanged", 0, _bitgen_unit(a))
    else:
        moved = _BIT_GENERATORS[name](a, b, name, limit)
    if seq_a and seq_b and seq_a["n_children_spawned"] != seq_b["n_children_spawned"]:
        spawned = f"children spawned {seq_a['n_children_spawned']} -> {seq_b['n_children_spawned']}"
        status: Status = "advanced" if moved.status == "unchanged" else moved.status
        detail = f"{moved.detail}; {spawned}" if moved.detail else spawned
        return _Moved(status, moved.distance, moved.unit, detail)
    return moved


# -- torch CUDA and DataLoader ----------------------------------------------------------------


def _torch_cuda(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _Moved:
    seed_a, offset_a = torch_cuda.parse(a["state"])
    seed_b, offset_b = torch_cuda.parse(b["state"])
    if seed_a != seed_b:
        return _Moved("reseeded", detail=f"seed {seed_a} -> {seed_b}")
    return _by_sign(offset_b - offset_a, CUDA_OFFSET)


def _dataloader(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _Moved:
    parts: list[tuple[str, _Moved]] = []
    for key in ("generator", "sampler_generator"):
        gen_a, gen_b = a[key], b[key]
        if gen_a is None and gen_b is None:
            continue
        if gen_a is None or gen_b is None:
            only = "A" if gen_b is None else "B"
            parts.append((key, _Moved("reseeded", detail=f"only {only} has one")))
        else:
            parts.append((key, _torch_cpu_bytes(gen_a, gen_b, limit)))
    sampler_a, sampler_b = a["sampler"], b["sampler"]
    if sampler_a is not None or sampler_b is not None:
        if sampler_a is None or sampler_b is None or sampler_a["seed"] != sampler_b["seed"]:
            parts.append(("sampler", _Moved("reseeded", detail="DistributedSampler seed differs")))
        else:
            epochs = sampler_b["epoch"] - sampler_a["epoch"]
            parts.append(("sampler", _by_sign(epochs, EPOCHS)))
    if not parts:
        return _Moved("unchanged", 0, "", "uses the global torch generator")
    status = max((moved.status for _, moved in parts), key=_RANK.__getitem__)
    # The distance comes from the first part with that status: the loader's generator,
    # else the sampler's generator, else the DistributedSampler's epoch.
    lead = next(moved for _, moved in parts if moved.status == status)
    details = []
    for key, moved in parts:
        if key == "sampler" and moved.status != "reseeded":
            text = f"epoch {sampler_a['epoch']} -> {sampler_b['epoch']}" if moved.distance else ""
        elif moved is lead or moved.status == "unchanged":
            text = ""  # the distance column already says it
        else:
            text = moved.status if moved.distance is None else f"{moved.distance} {moved.unit}"
        text = "; ".join(t for t in (text, moved.detail) if t)
        if text:
            details.append(f"{key}: {text}")
    return _Moved(status, lead.distance, lead.unit, "; ".join(details))


_COMPARE = {
    "python": _python,
    "numpy.legacy": _numpy_legacy,
    "numpy.bitgen": _numpy_bitgen,
    "torch.cpu": _torch_cpu,
    "torch.cuda": _torch_cuda,
    "dataloader": _dataloader,
}


def _bitgen_unit(fields: Mapping[str, Any]) -> str:
    return MT32 if fields["bit_generator"] == "MT19937" else RAW64


def _unit(state: State) -> str:
    """The distance unit of a (validated) state."""
    if state.family == "numpy.bitgen":
        return _bitgen_unit(state.fields)
    if state.family == "torch.cuda":
        return CUDA_OFFSET
    if state.family == "dataloader":
        has_generator = state.fields["generator"] or state.fields["sampler_generator"]
        return MT32 if has_generator else EPOCHS if state.fields["sampler"] else ""
    return MT32
