"""Python's ``random``: the module's global generator and any ``random.Random``.

State: the 624 words of the MT19937 key, the index into it (624 means "twist before the
next output") and ``gauss_next``, the second normal of the last Box-Muller pair.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import StateError
from rngvault.families import Family, Fields
from rngvault.families import _fields as f

_KEYS = frozenset({"key", "index", "gauss_next"})


def accepts(obj: Any) -> bool:
    # SystemRandom reads the OS and has no state to capture.
    return isinstance(obj, random.Random) and not isinstance(obj, random.SystemRandom)


def capture(obj: random.Random) -> Fields:
    _version, internal, gauss_next = obj.getstate()
    return {"key": internal[:624], "index": internal[624], "gauss_next": gauss_next}


def validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, _KEYS)
    key = f.get(fields, "key")
    if not isinstance(key, (tuple, list)):
        raise StateError(f"expected 624 integers, got {type(key).__name__}", field="key")
    f.mt_key(key, "key")
    f.integer(fields, "index", 0, 624)
    f.real(fields, "gauss_next", optional=True)


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not accepts(obj):
        raise StateError(f"a python random state cannot be restored into a {type(obj).__name__}")


def restore(obj: random.Random, fields: Mapping[str, Any]) -> None:
    gauss = fields["gauss_next"]
    internal = (*fields["key"], fields["index"])
    obj.setstate((3, internal, None if gauss is None else float(gauss)))


def describe(fields: Mapping[str, Any]) -> str:
    text = f"MT index {fields['index']}/624"
    if fields.get("gauss_next") is not None:
        text += ", cached gauss"
    return text


def probe(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    rng = random.Random()
    restore(rng, fields)
    return [rng.random(), rng.random(), rng.gauss(0.0, 1.0), rng.getrandbits(32)]


def to_mt(fields: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    return np.array(fields["key"], dtype=np.uint32), int(fields["index"])


def from_mt(key: np.ndarray, index: int) -> Fields:
    return {"key": tuple(key.tolist()), "index": index, "gauss_next": None}


def distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    cache = (_distance.NORMAL, a["gauss_next"], b["gauss_next"])
    return _distance.mt_moved(to_mt(a), to_mt(b), limit, cache)


def unit(_fields: Mapping[str, Any]) -> str:
    return _distance.MT32


def derive(_fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    return capture(random.Random(int(seq.generate_state(4, np.uint64)[0])))


def process_globals() -> list[tuple[str, Any]]:
    return [("python.global", random._inst)]


def global_target(name: str) -> tuple[Any, str] | None:
    return (random._inst, "") if name == "python.global" else None


FAMILY = Family(
    name="python",
    kind="random.Random",
    accepts=accepts,
    capture=capture,
    validate=validate,
    check_target=check_target,
    restore=restore,
    describe=describe,
    probe=probe,
    distance=distance,
    unit=unit,
    derive=derive,
    process_globals=process_globals,
    global_target=global_target,
    environment=frozenset({"python", "implementation"}),
    to_mt=to_mt,
    from_mt=from_mt,
)
