"""Field checks shared by the generator families.

Each check reads one field of a state, raises ``StateError`` naming the field and the bad
value when it is wrong, and returns the value in its canonical type otherwise.
"""

from __future__ import annotations

from array import array as _c_array
from collections.abc import Mapping
from typing import Any

import numpy as np

from rngvault._errors import StateError

_MISSING = object()


def _show(value: Any) -> str:
    if type(value) is int and value.bit_length() > 160:
        # repr of a huge int is slow, and refused past 4300 digits
        return f"a {value.bit_length()}-bit int"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _map(fields: Any, path: str) -> None:
    """A StateError naming the field when ``fields`` (at ``path``) is not a map."""
    if type(fields) is not dict and not isinstance(fields, Mapping):
        raise StateError(
            f"expected a map, got {type(fields).__name__} {_show(fields)}",
            field=path.rstrip(".") or "fields",
        )


def get(fields: Mapping[str, Any], key: str, path: str = "") -> Any:
    """The field ``key`` of ``fields``; a missing field is a StateError."""
    if type(fields) is not dict:  # decoded fields are dicts: checked once, here
        _map(fields, path)
    value = fields.get(key, _MISSING)
    if value is _MISSING:
        raise StateError("missing field", field=path + key)
    return value


def check_keys(
    fields: Mapping[str, Any], allowed: set[str] | frozenset[str], path: str = ""
) -> None:
    """Reject fields no family version ever wrote, so corruption cannot pass as extra data.
    ``path`` is where ``fields`` is (``"state"``); the error names the first unknown one."""
    if type(fields) is not dict:
        _map(fields, path)
    if fields.keys() <= allowed:  # the common case, at C speed
        return
    extra = sorted(set(fields) - allowed, key=repr)
    if extra:
        first = extra[0] if isinstance(extra[0], str) else repr(extra[0])
        raise StateError(
            f"unknown field(s) {', '.join(map(_show, extra))}",
            field=f"{path}.{first}" if path else first,
        )


def integer(fields: Mapping[str, Any], key: str, lo: int, hi: int, path: str = "") -> int:
    """An int field with ``lo <= value <= hi`` (bool is not an int here)."""
    value = get(fields, key, path)
    if type(value) is int and lo <= value <= hi:  # the common case first
        return value
    if isinstance(value, np.integer):
        value = int(value)
    if type(value) is not int:
        raise StateError(
            f"expected an integer, got {type(value).__name__} {_show(value)}",
            field=path + key,
            value=value,
        )
    if not lo <= value <= hi:
        raise StateError(
            f"{_show(value)} is out of range {lo}..{hi}", field=path + key, value=value
        )
    return value


def flag(fields: Mapping[str, Any], key: str, path: str = "") -> int:
    """A 0/1 flag (numpy stores these as ints); bools are accepted and returned as ints."""
    value = get(fields, key, path)
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return integer(fields, key, 0, 1, path)


def real(fields: Mapping[str, Any], key: str, path: str = "", *, optional: bool = False) -> Any:
    """A float field (ints are accepted and widened); ``None`` too when optional."""
    value = get(fields, key, path)
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating)):
        raise StateError(
            f"expected a float{' or None' if optional else ''}, got {type(value).__name__} "
            f"{_show(value)}",
            field=path + key,
            value=value,
        )
    try:
        return float(value)
    except OverflowError:  # an int beyond the largest float
        raise StateError(
            f"{_show(value)} is too large for a float", field=path + key, value=value
        ) from None


_DTYPE = {name: np.dtype(name) for name in ("uint32", "uint64")}


def array(
    fields: Mapping[str, Any], key: str, dtype: str, length: int, path: str = ""
) -> np.ndarray:
    """A one-dimensional array of ``length`` elements of ``dtype`` (e.g. ``"uint32"``)."""
    value = get(fields, key, path)
    if not isinstance(value, np.ndarray):
        raise StateError(f"expected a {dtype} array, got {type(value).__name__}", field=path + key)
    if value.dtype != _DTYPE[dtype] or value.shape != (length,):
        raise StateError(
            f"expected {dtype}[{length}], got {value.dtype}{list(value.shape)}",
            field=path + key,
        )
    return value


def blob(fields: Mapping[str, Any], key: str, size: int, path: str = "") -> bytes:
    """A bytes field of exactly ``size`` bytes."""
    value = get(fields, key, path)
    if not isinstance(value, (bytes, bytearray)):
        raise StateError(f"expected bytes, got {type(value).__name__}", field=path + key)
    if len(value) != size:
        raise StateError(
            f"expected {size} bytes, got {len(value)}", field=path + key, value=len(value)
        )
    return bytes(value)


STUCK_KEY = (
    "the MT19937 key is all zeros (but for low bits of word 0, which no twist reads), which "
    "never recovers: every output after the next twist is 0"
)


def mt_words(words: np.ndarray, field: str) -> None:
    """624 MT19937 words in an unsigned array (any width): each below 2**32, not stuck."""
    if len(words) != 624:
        raise StateError(f"expected 624 words, got {len(words)}", field=field, value=len(words))
    rest = int(words[1:].max())  # one reduction answers both checks
    first = int(words[0])
    if max(rest, first) >= 2**32:
        raise StateError("an MT19937 word is wider than 32 bits", field=field)
    if not rest and not first >> 31:
        raise StateError(STUCK_KEY, field=field)


def mt_key(key: Any, field: str) -> None:
    """The 624 words of an MT19937 key, as a uint32 array or a sequence of ints: 32-bit, and
    not a key that twists into zeros."""
    if isinstance(key, np.ndarray):
        mt_words(key, field)
        return
    if len(key) != 624:
        raise StateError(f"expected 624 words, got {len(key)}", field=field, value=len(key))
    # Checked at C speed: array("I") refuses words outside 0..2**32-1 and non-integers. It
    # takes bools as 0 and 1, so where a 0 or 1 is present the types are looked at too (a
    # real key has neither, almost always). The slow loop only runs to name a bad word.
    try:
        words = np.frombuffer(_c_array("I", key), dtype=np.uint32)
        good = not (words < 2).any() or set(map(type, key)) == {int}
    except (OverflowError, TypeError):
        good = False
    if not good:
        for i, word in enumerate(key):
            if type(word) is not int or not 0 <= word < 2**32:
                raise StateError(
                    f"word {i} is {_show(word)}, not a 32-bit unsigned integer",
                    field=field,
                    value=word,
                )
    mt_words(words, field)


def show(value: Any) -> str:
    """A short repr for messages."""
    return _show(value)
