"""The value codec of the snapshot format (docs/format.md): canonical msgpack, the two
extension types, and the digest of a states map.

Values are msgpack nil, bool, int, float64, str, bin, array and map (str keys), plus two
extension types whose codes are fixed and never reused:

- ext 1, BIGINT: an integer outside int64/uint64, as big-endian two's complement of
  ``(bit_length + 8) // 8`` bytes (``bigint_length``), at most ``MAX_BIGINT_BYTES``.
- ext 2, NDARRAY: a typed array, payload = msgpack ``[dtype, shape, data]`` where dtype is one
  of u1 u2 u4 u8 i1 i2 i4 i8 f4 f8 b1 (little-endian), shape an array of ints, data the
  C-order bytes.

The canonical encoding sorts map keys and uses msgpack's shortest headers, so one value has
one encoding; the digest of a snapshot is the SHA-256 of its states map so encoded. The
snapshot layer (``rngvault._format``) reads and writes whole snapshots with it; this module
imports nothing of rngvault but its errors, so ``Snapshot.digest`` can use it directly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from rngvault._errors import DecodeError, StateError

if TYPE_CHECKING:
    from rngvault._snapshot import State

EXT_BIGINT = 1
EXT_NDARRAY = 2
DTYPES = frozenset({"u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8", "b1"})
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
# 2040-bit magnitudes: far above the largest integer a family stores (a 1024-bit seed
# sequence entropy, 129 bytes), and small enough that any such integer prints in well under
# Python's 4300-digit limit.
MAX_BIGINT_BYTES = 256
# An NDARRAY has at most this many dimensions (the families' arrays have one).
MAX_NDIM = 8

_NP_DTYPES = {code: np.dtype("<" + code) for code in DTYPES}


def show(value: Any) -> str:
    """A short rendering of a decoded value for messages: never a huge int or a long text."""
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (bytes, bytearray)):
        return f"a bin of {len(value)} bytes"
    if isinstance(value, np.ndarray):
        return f"an NDARRAY {value.dtype.str[1:]}{list(value.shape)}"
    if type(value) in (tuple, list):
        return f"an array of {len(value)} items"
    if type(value) is dict:
        return f"a map of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind(value: Any) -> str:
    """The msgpack kind of a decoded value, for messages."""
    return _KINDS.get(type(value), type(value).__name__)


_KINDS = {
    type(None): "nil",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bin",
    tuple: "array",
    list: "array",
    dict: "map",
    np.ndarray: "NDARRAY",
    msgpack.Timestamp: "msgpack timestamp (ext -1)",  # msgpack-python decodes ext -1 itself
}


# -- encoding -------------------------------------------------------------------------------


def bigint_length(value: int) -> int:
    """The payload length of ``value`` as BIGINT: room for its bits and a sign bit.

    This is rngvault's writer's rule, and so the canonical one: it is one byte more than
    two's complement needs for negative powers of two (-2**71 takes 10 bytes, not 9).
    """
    return (value.bit_length() + 8) // 8


def _bigint(value: int) -> msgpack.ExtType:
    length = bigint_length(value)
    if length > MAX_BIGINT_BYTES:
        raise ValueError(
            f"{show(value)} is beyond the {MAX_BIGINT_BYTES}-byte limit of BIGINT (ext 1)"
        )
    return msgpack.ExtType(EXT_BIGINT, value.to_bytes(length, "big", signed=True))


def packb(value: Any, size: int = 4096, default: Any = None) -> bytes:
    """msgpack.packb with a first buffer of ``size`` bytes (it grows as needed).

    msgpack's own first buffer is 256 KiB: above malloc's mmap threshold, or trimmed off the
    heap again when freed, its pages fault in anew on every call, which costs more than
    packing a snapshot does.
    """
    return msgpack.Packer(default=default, use_bin_type=True, buf_size=size).pack(value)


def _ndarray_payload(code: str, shape: tuple[int, ...], data: bytes) -> bytes:
    return packb([code, list(shape), data], len(data) + 64)


def _default(value: Any) -> Any:
    """What msgpack cannot pack itself: arrays, numpy scalars, ints beyond 64 bits."""
    if isinstance(value, np.ndarray):
        code = value.dtype.str[1:]
        if code not in DTYPES:
            raise TypeError(f"cannot encode an array of dtype {value.dtype}")
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
        return msgpack.ExtType(EXT_NDARRAY, _ndarray_payload(code, value.shape, data))
    if isinstance(value, np.integer):
        value = int(value)
        return value if INT_MIN <= value <= INT_MAX else _bigint(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int):  # msgpack calls back for ints beyond 64 bits
        return _bigint(value)
    raise TypeError(f"cannot encode a {type(value).__name__} in a snapshot")


# Values _canon passes through unchanged, recognised by exact type before the (slower)
# Mapping check; msgpack and _default encode them.
_LEAVES = frozenset({str, bytes, float, bool, type(None), np.ndarray})


def _canon(value: Any) -> Any:
    """``value`` with every map's keys sorted and every int beyond 64 bits as BIGINT."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is int:
        return value if INT_MIN <= value <= INT_MAX else _bigint(value)
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for key in sorted(value):
            item = value[key]
            # Leaves inline: this walk is most of encode()'s Python time.
            out[key] = item if type(item) in _LEAVES else _canon(item)
        return out
    if isinstance(value, (tuple, list)):
        try:
            # sum() runs at C speed and fails on anything but numbers (and arrays of one
            # shape): a sequence of numbers, such as a 624-word MT key, holds no map to
            # sort, and msgpack calls _default for its ints beyond 64 bits.
            sum(value)
        except (TypeError, ValueError, ArithmeticError):
            return [_canon(item) for item in value]
    return value


def pack_value(value: Any) -> bytes:
    """The canonical encoding of one value (TypeError/ValueError for what it cannot hold)."""
    return packb(_canon(value), default=_default)


def encode_states(states: Mapping[str, State]) -> bytes:
    """The canonical encoding of a states map (what the digest covers)."""
    # Built directly: "family" sorts before "fields".
    canon = {
        name: {"family": states[name].family, "fields": _canon(states[name].fields)}
        for name in sorted(states)
    }
    try:
        return packb(canon, 32 * 1024, _default)
    except (TypeError, ValueError) as exc:
        raise StateError(f"cannot encode the states: {exc}") from exc


def states_digest(states: Mapping[str, State]) -> str:
    """SHA-256 (hex) of the canonical encoding of ``states``."""
    return hashlib.sha256(encode_states(states)).hexdigest()


# -- decoding -------------------------------------------------------------------------------


def decode_bigint(data: bytes) -> int:
    """The value of a BIGINT payload, refused unless it is the canonical one."""
    if not data:
        raise DecodeError("empty BIGINT extension (ext 1)")
    if len(data) > MAX_BIGINT_BYTES:
        raise DecodeError(
            f"BIGINT extension (ext 1) of {len(data)} bytes; at most {MAX_BIGINT_BYTES}"
        )
    value = int.from_bytes(data, "big", signed=True)
    if INT_MIN <= value <= INT_MAX:
        raise DecodeError(
            f"BIGINT extension (ext 1) holding {value}, which msgpack's own ints hold: "
            "not the canonical encoding"
        )
    if len(data) != bigint_length(value):
        raise DecodeError(
            f"BIGINT extension (ext 1) of {len(data)} bytes for {show(value)}: the canonical "
            f"encoding has (bit_length + 8) // 8 = {bigint_length(value)}"
        )
    return value


def decode_ndarray(data: bytes) -> np.ndarray:
    """The array of an NDARRAY payload, refused unless the payload is canonical."""
    for length in _HEADER_LENGTHS:
        known = _HEADERS.get(data[:length])
        if known is not None and len(data) - length == known[2]:
            return _array(data, length, known[0], known[1])
    try:
        code, shape, raw = msgpack.unpackb(data, raw=False, use_list=False)
    except Exception as exc:  # anything msgpack may raise on garbage, or a wrong arity
        raise DecodeError(f"malformed NDARRAY extension (ext 2): {exc}") from None
    if type(code) is not str or code not in DTYPES:
        raise DecodeError(f"NDARRAY extension with unsupported dtype {show(code)}")
    if (
        type(shape) is not tuple
        or len(shape) > MAX_NDIM
        or not all(type(n) is int and 0 <= n < 2**63 for n in shape)
    ):
        raise DecodeError(f"NDARRAY extension with a bad shape {show(shape)}")
    if type(raw) is not bytes:
        raise DecodeError("NDARRAY extension whose data is not bytes")
    dtype = _NP_DTYPES[code]
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise DecodeError(
            f"NDARRAY extension: shape {list(shape)} of {code} needs "
            f"{math.prod(shape) * dtype.itemsize} bytes, got {len(raw)}"
        )
    header = _ndarray_payload(code, shape, raw)[: -len(raw) or None]
    if data[: len(data) - len(raw)] != header:
        raise DecodeError("NDARRAY extension (ext 2) whose payload is not in canonical form")
    try:
        array = _array(raw, 0, dtype, shape)
    except ValueError as exc:  # dimensions numpy cannot index, around an empty array
        raise DecodeError(f"NDARRAY extension with a bad shape {list(shape)}: {exc}") from None
    _remember_header(header, dtype, shape, len(raw))
    return array


def _array(data: bytes, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A writable array in native byte order of the little-endian elements after ``offset``."""
    if dtype.isnative:  # a bytearray copy is the cheapest writable buffer
        array = np.frombuffer(bytearray(memoryview(data)[offset:]), dtype=dtype)
    else:
        array = np.frombuffer(data, dtype=dtype, offset=offset).astype(dtype.newbyteorder("="))
    return array if len(shape) == 1 else array.reshape(shape)


# The canonical payload headers (all but the data) of arrays decoded so far, with their
# dtype, shape and data size: the families' arrays have a few shapes, so most payloads are
# recognised by their header (a header of one dtype and shape, and data of its size, is
# the canonical payload of such an array). Any shape may come from the wire: a few are kept.
_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}
_HEADER_LENGTHS: tuple[int, ...] = ()


def _remember_header(header: bytes, dtype: np.dtype, shape: tuple[int, ...], size: int) -> None:
    global _HEADER_LENGTHS
    if len(_HEADERS) < 16:
        _HEADERS[header] = (dtype, shape, size)
        _HEADER_LENGTHS = tuple(sorted({*_HEADER_LENGTHS, len(header)}))


def decode_ext(code: int, data: bytes) -> Any:
    """An extension value (``ext_hook`` for msgpack): BIGINT or NDARRAY, canonical only."""
    if code == EXT_BIGINT:
        return decode_bigint(data)
    if code == EXT_NDARRAY:
        return decode_ndarray(data)
    raise DecodeError(f"unknown msgpack extension code {code} (the format has 1 and 2)")
