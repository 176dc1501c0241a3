"""Fast access to NumPy's MT19937 state, shared by the ``numpy.legacy`` and ``numpy.bitgen``
families.

NumPy's getters and setters for an MT19937 state (``MT19937.state``,
``RandomState.get_state``/``set_state``) copy the 624-word key one element at a time in
Cython: about 30 µs each way, the largest cost of a typical capture or restore. The same
values sit in C structs: the bit generator's ``mt19937_state`` (``uint32 key[624]`` then
``int pos``, reached through its ``ctypes.state_address``) and, for a ``RandomState``, the
cached normal (``int has_gauss`` then ``double gauss``) inside the object. Read and written
there, they take about 2 µs.

Each fast path is proven once per process, on a private generator, against NumPy's own
getter and setter (read, write, and read back, with distinct values); if anything differs,
or the layout cannot be found, NumPy's public getter and setter are used from then on.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from typing import Any

import numpy as np

N = 624
_MT_BYTES = N * 4 + 4  # uint32 key[624], int pos
_GAUSS = struct.Struct("=i4xd")  # int has_gauss, padding, double gauss

_mt_ok: bool | None = None  # None until proven
_gauss_offset: int | None = None  # offset of has_gauss in a RandomState; -1: not found


def _mt_struct_read(bit_generator: np.random.MT19937) -> tuple[np.ndarray, int]:
    raw = ctypes.string_at(bit_generator.ctypes.state_address, _MT_BYTES)
    key = np.frombuffer(raw, dtype=np.uint32, count=N).copy()
    return key, int.from_bytes(raw[N * 4 :], sys.byteorder, signed=True)


def _mt_struct_write(bit_generator: np.random.MT19937, key: Any, pos: int) -> None:
    raw = np.ascontiguousarray(key, dtype=np.uint32).tobytes()
    raw += int(pos).to_bytes(4, sys.byteorder, signed=True)
    # The fields were validated, but an array can be changed in place since: never copy
    # other than exactly the struct's bytes, nor a pos the struct cannot take.
    if len(raw) != _MT_BYTES or not 0 <= pos <= N:
        raise ValueError(f"an MT19937 state needs 624 words and pos 0..624, not {len(raw)} bytes")
    ctypes.memmove(bit_generator.ctypes.state_address, raw, _MT_BYTES)


def _prove_mt() -> bool:
    """Whether the struct reads what ``.state`` says and ``.state`` sees what it writes."""
    try:
        source = np.random.MT19937(20240229)
        source.random_raw(100)
        key, pos = _mt_struct_read(source)
        state = source.state["state"]
        if pos != state["pos"] or not np.array_equal(key, state["key"]):
            return False
        target = np.random.MT19937(7)
        _mt_struct_write(target, key, pos)
        state = target.state["state"]
        return (
            state["pos"] == pos
            and bool(np.array_equal(state["key"], key))
            and bool(np.array_equal(target.random_raw(700), source.random_raw(700)))
        )
    except Exception:  # any surprise in NumPy's internals: keep to the public path
        return False


def mt_fast() -> bool:
    """Whether the struct path is proven in this process (proves it on first use)."""
    global _mt_ok
    if _mt_ok is None:
        _mt_ok = _prove_mt()
    return _mt_ok


def read_mt(bit_generator: np.random.MT19937) -> tuple[np.ndarray, int]:
    """The key (a fresh uint32[624] array) and pos of an MT19937 bit generator."""
    if mt_fast():
        with bit_generator.lock:
            return _mt_struct_read(bit_generator)
    state = bit_generator.state["state"]
    return np.asarray(state["key"], dtype=np.uint32), int(state["pos"])


def write_mt(bit_generator: np.random.MT19937, key: Any, pos: int) -> None:
    """Set an MT19937 bit generator's key and pos (validated by the caller)."""
    if mt_fast():
        with bit_generator.lock:
            _mt_struct_write(bit_generator, key, pos)
        return
    bit_generator.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}


# -- RandomState's cached normal ---------------------------------------------------------


def _set_gauss(rs: np.random.RandomState, has_gauss: int, gauss: float) -> None:
    state = rs.get_state(legacy=False)
    state.update(has_gauss=has_gauss, gauss=gauss)
    rs.set_state(state)


def _find_gauss() -> int:
    """The offset of ``has_gauss`` in a RandomState object, or -1: the one 8-aligned place
    where three distinct cached normals appear, with their flag 8 bytes before them, and
    where writing a fourth is what ``get_state`` then reports."""
    try:
        rs = np.random.RandomState(1)
        size = type(rs).__basicsize__
        found: set[int] | None = None
        for has_gauss, gauss in ((1, 1.2345678901234567e-300), (0, -9.87654321e200), (1, 0.1)):
            _set_gauss(rs, has_gauss, gauss)
            raw = ctypes.string_at(id(rs), size)
            here = {
                offset
                for offset in range(16, size - _GAUSS.size + 1, 8)
                if _GAUSS.unpack_from(raw, offset) == (has_gauss, gauss)
            }
            found = here if found is None else found & here
        if found is None or len(found) != 1:
            return -1
        offset = found.pop()
        ctypes.memmove(id(rs) + offset, _GAUSS.pack(1, -2.5), _GAUSS.size)
        state = rs.get_state(legacy=False)
        if (state["has_gauss"], state["gauss"]) != (1, -2.5) or rs.standard_normal() != -2.5:
            return -1
        return offset
    except Exception:  # any surprise in NumPy's internals: keep to the public path
        return -1


def gauss_offset() -> int:
    """Where a RandomState keeps ``has_gauss`` and ``gauss`` (-1: use its public methods)."""
    global _gauss_offset
    if _gauss_offset is None:
        _gauss_offset = _find_gauss() if mt_fast() else -1
    return _gauss_offset


def read_legacy(rs: np.random.RandomState) -> tuple[np.ndarray, int, int, float]:
    """Key, pos, has_gauss and gauss of a RandomState over MT19937."""
    offset = gauss_offset()
    if offset < 0:
        state = rs.get_state(legacy=False)
        inner = state["state"]
        return inner["key"], int(inner["pos"]), int(state["has_gauss"]), float(state["gauss"])
    bit_generator: Any = rs._bit_generator
    with bit_generator.lock:
        key, pos = _mt_struct_read(bit_generator)
        has_gauss, gauss = _GAUSS.unpack(ctypes.string_at(id(rs) + offset, _GAUSS.size))
    return key, pos, has_gauss, gauss


def write_legacy(
    rs: np.random.RandomState, key: Any, pos: int, has_gauss: int, gauss: float
) -> None:
    """Set a RandomState over MT19937 (fields validated by the caller)."""
    offset = gauss_offset()
    if offset < 0:
        rs.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": key, "pos": int(pos)},
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            }
        )
        return
    bit_generator: Any = rs._bit_generator
    with bit_generator.lock:
        _mt_struct_write(bit_generator, key, pos)
        ctypes.memmove(id(rs) + offset, _GAUSS.pack(int(has_gauss), float(gauss)), _GAUSS.size)
