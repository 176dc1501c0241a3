"""The mechanics of draw distances, shared by the families' ``distance`` functions.

A family's ``distance(a, b, limit)`` says how far state B is ahead of state A as a
``Moved``; ``rngvault._diff`` turns it into a ``GeneratorDiff``. What lives here knows no
family: MT19937 stream searches, LCG jump distances, signed distances and the wording for
cached values that ride beside a stream position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rngvault._snapshot import values_equal

RAW64 = "raw 64-bit outputs"
MT32 = "32-bit MT outputs"
CUDA_OFFSET = "Philox offset units"
EPOCHS = "sampler epochs"

HALF_WORD = "buffered 32-bit half-word"
NORMAL = "cached normal"

Status = Literal["unchanged", "advanced", "behind", "reseeded", "missing", "unknown"]
# When parts of one generator (a DataLoader) disagree, the strongest status wins.
RANK: dict[str, int] = {
    "unchanged": 0,
    "advanced": 1,
    "behind": 1,
    "unknown": 2,
    "reseeded": 3,
}


@dataclass(frozen=True, slots=True)
class Moved:
    """How far B is from A in one generator: the outcome of a family's ``distance``.

    Attributes:
        status: ``unchanged``, ``advanced``, ``behind``, ``reseeded`` or ``unknown``.
        distance: how many ``unit`` B is ahead of A (negative when behind), or None.
        unit: what ``distance`` counts.
        detail: why, in words.
    """

    status: Status
    distance: int | None = None
    unit: str = ""
    detail: str = ""


Distance = Callable[[Mapping[str, Any], Mapping[str, Any], int], Moved]


def signed(distance: int, modulus: int) -> int:
    """A distance modulo ``modulus`` as the signed value nearest zero (behind when negative)."""
    return distance - modulus if distance > modulus // 2 else distance


def cache_note(what: str, a: Any, b: Any) -> str:
    """Words for a cached value (None when empty) that differs between A and B, else ""."""
    if values_equal(a, b):
        return ""
    if a is None:
        return f"B holds a {what}, A does not"
    if b is None:
        return f"A holds a {what}, B does not"
    return f"the {what} differs"


def by_sign(distance: int, unit: str, detail: str = "") -> Moved:
    if distance > 0:
        return Moved("advanced", distance, unit, detail)
    if distance < 0:
        return Moved("behind", distance, unit, detail)
    return Moved("unchanged", 0, unit, detail)


def moved(distance: int, unit: str, notes: list[str], cache: tuple[str, Any, Any]) -> Moved:
    """The outcome for a known distance between states that differ, given the cached value
    (a buffered half-word, a cached normal: None when empty) that rides beside the position."""
    note = cache_note(*cache)
    detail = "; ".join(n for n in [*notes, note] if n)
    if distance != 0:
        return by_sign(distance, unit, detail)
    if not note:
        return Moved("unchanged", 0, unit, "; ".join([*notes, "same position, stored differently"]))
    what, cached_a, cached_b = cache
    if cached_a is not None and cached_b is None:
        return Moved("advanced", 0, unit, "; ".join([*notes, f"B used A's {what}"]))
    return Moved("unknown", None, "", f"{detail}, which drawing cannot leave at the same position")


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


def mt_moved(
    a: tuple[np.ndarray, int],
    b: tuple[np.ndarray, int],
    limit: int,
    cache: tuple[str, Any, Any],
    notes: list[str] | None = None,
) -> Moved:
    """The outcome between two MT19937 (key, index) positions."""
    distance = mt_distance(a, b, limit)
    if distance is None:
        return Moved(
            "unknown",
            detail=f"not within {limit} outputs of A either way: reseeded, set, or further apart",
        )
    return moved(distance, MT32, notes or [], cache)


# -- LCG --------------------------------------------------------------------------------------


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
