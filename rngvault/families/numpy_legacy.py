"""NumPy's legacy ``RandomState``: the global ``np.random`` functions and any RandomState.

State: the MT19937 key (uint32[624]), ``pos`` (0..624), and the cached second normal
(``has_gauss``, ``gauss``). NumPy accepts ``pos`` outside 0..624 and then reads past the key
(a segfault), so ``validate`` must run before NumPy sees a state. They are read and written
through ``families/_numpy.py``, which avoids NumPy's element-by-element copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import CaptureError, StateError
from rngvault.families import Family, Fields, _numpy
from rngvault.families import _fields as f

_KEYS = frozenset({"key", "pos", "has_gauss", "gauss"})


def accepts(obj: Any) -> bool:
    return isinstance(obj, np.random.RandomState)


def capture(obj: np.random.RandomState) -> Fields:
    if not isinstance(obj._bit_generator, np.random.MT19937):
        raise CaptureError(
            f"a RandomState over {type(obj._bit_generator).__name__} is not supported; "
            "track its bit generator instead (numpy.bitgen)"
        )
    key, pos, has_gauss, gauss = _numpy.read_legacy(obj)
    return {"key": key, "pos": pos, "has_gauss": has_gauss, "gauss": gauss}


def validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, _KEYS)
    f.mt_key(f.array(fields, "key", "uint32", 624), "key")
    f.integer(fields, "pos", 0, 624)
    f.flag(fields, "has_gauss")
    f.real(fields, "gauss")


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not accepts(obj):
        raise StateError(
            f"a numpy RandomState state cannot be restored into a {type(obj).__name__}"
        )
    bit_generator = type(obj._bit_generator).__name__
    if bit_generator != "MT19937":
        raise StateError(f"the target RandomState runs {bit_generator}, not MT19937")


def restore(obj: np.random.RandomState, fields: Mapping[str, Any]) -> None:
    _numpy.write_legacy(obj, fields["key"], fields["pos"], fields["has_gauss"], fields["gauss"])


def describe(fields: Mapping[str, Any]) -> str:
    text = f"MT pos {fields['pos']}/624"
    if fields.get("has_gauss"):
        text += ", cached gauss"
    return text


def probe(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    rng = np.random.RandomState()
    restore(rng, fields)
    draws = rng.random_sample(2).tolist()
    return [*draws, float(rng.standard_normal()), int(rng.randint(0, 2**31))]


def to_mt(fields: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    return np.array(fields["key"], dtype=np.uint32), int(fields["pos"])


def from_mt(key: np.ndarray, index: int) -> Fields:
    return {"key": key, "pos": index, "has_gauss": 0, "gauss": 0.0}


def _gauss(fields: Mapping[str, Any]) -> float | None:
    return float(fields["gauss"]) if fields["has_gauss"] else None


def distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    cache = (_distance.NORMAL, _gauss(a), _gauss(b))
    return _distance.mt_moved(to_mt(a), to_mt(b), limit, cache)


def unit(_fields: Mapping[str, Any]) -> str:
    return _distance.MT32


def derive(_fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    return capture(np.random.RandomState(np.random.MT19937(seq)))


def process_globals() -> list[tuple[str, Any]]:
    return [("numpy.global", np.random.mtrand._rand)]


def global_target(name: str) -> tuple[Any, str] | None:
    return (np.random.mtrand._rand, "") if name == "numpy.global" else None


FAMILY = Family(
    name="numpy.legacy",
    kind="numpy.random.RandomState",
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
    to_mt=to_mt,
    from_mt=from_mt,
)
