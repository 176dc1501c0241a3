"""The snapshot format: msgpack, no pickle, versioned. docs/format.md is its specification.

A snapshot is one msgpack map::

    {"format": "rngvault-snapshot", "version": 1, "created": float64, "digest": hex str,
     "states": {name: {"family": str, "fields": map}}, "metadata": map, "environment": map,
     "probes": map}

Values inside ``fields`` are msgpack nil, bool, int, float64, str, bin, array, map, plus two
extension types whose codes are fixed and never reused:

- ext 1, BIGINT: an integer outside int64/uint64, as big-endian two's complement, minimal length.
- ext 2, NDARRAY: a typed array, payload = msgpack ``[dtype, shape, data]`` where dtype is one
  of u1 u2 u4 u8 i1 i2 i4 i8 f4 f8 b1 (little-endian), shape an array of ints, data the
  C-order bytes.

Maps are written with their keys sorted, so one state has one encoding; ``digest`` is the
SHA-256 of the encoding of the ``states`` map alone, checked on every decode.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np

from rngvault._errors import DecodeError, EncodeError, StateError
from rngvault._names import _GENERATOR_NAME, GENERATOR_NAME_RULE
from rngvault._snapshot import FORMAT_VERSION, Metadata, Snapshot, State

FORMAT_TAG = "rngvault-snapshot"
EXT_BIGINT = 1
EXT_NDARRAY = 2
_DTYPES = {"u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8", "b1"}
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_TOP_KEYS = ("format", "version", "created", "digest", "states", "metadata", "environment")
MAX_SNAPSHOT_BYTES = 256 * 2**20
_NOT_A_SNAPSHOT = "not an rngvault snapshot (no 'format': 'rngvault-snapshot' map)"


# -- encoding -------------------------------------------------------------------------------


def _bigint(value: int) -> msgpack.ExtType:
    length = (value.bit_length() + 8) // 8
    return msgpack.ExtType(EXT_BIGINT, value.to_bytes(length, "big", signed=True))


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        code = value.dtype.str[1:]
        if code not in _DTYPES:
            raise TypeError(f"cannot encode an array of dtype {value.dtype}")
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
        payload = msgpack.packb([code, list(value.shape), data])
        return msgpack.ExtType(EXT_NDARRAY, payload)
    if isinstance(value, np.integer):
        value = int(value)
        return value if _INT_MIN <= value <= _INT_MAX else _bigint(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int):  # only reached from the deep pass: out of msgpack's range
        return _bigint(value)
    raise TypeError(f"cannot encode a {type(value).__name__} in a snapshot")


# Values _canon passes through unchanged, recognised by exact type before the (slower)
# Mapping check.
_LEAVES = frozenset({str, bytes, float, bool, type(None), np.ndarray})


def _canon(value: Any, deep: bool) -> Any:
    """Sort map keys and wrap big ints; sequences are walked only in the ``deep`` pass."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else _bigint(value)
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for key in sorted(value):
            item = value[key]
            # Leaves inline: this walk is most of encode()'s Python time.
            if type(item) in _LEAVES:
                out[key] = item
            else:
                out[key] = _canon(item, deep)
        return out
    if deep and isinstance(value, (tuple, list)):
        return [_canon(v, deep) for v in value]
    return value


def _canon_states(states: Mapping[str, State], deep: bool) -> dict[str, Any]:
    """The states map in canonical form, built directly ("family" sorts before "fields")."""
    return {
        name: {"family": states[name].family, "fields": _canon(states[name].fields, deep)}
        for name in sorted(states)
    }


def _pack(value: Any, canon: Callable[[Any, bool], Any] = _canon) -> bytes:
    try:
        return msgpack.packb(canon(value, False), default=_default, use_bin_type=True)
    except OverflowError:  # a big int inside a sequence: walk the sequences too
        return msgpack.packb(canon(value, True), default=_default, use_bin_type=True)


def encode_states(states: Mapping[str, State]) -> bytes:
    """The canonical encoding of a states map (what the digest covers)."""
    try:
        return _pack(states, _canon_states)
    except (TypeError, ValueError) as exc:
        raise StateError(f"cannot encode the states: {exc}") from exc


def states_digest(states: Mapping[str, State]) -> str:
    """SHA-256 (hex) of the canonical encoding of ``states``."""
    return hashlib.sha256(encode_states(states)).hexdigest()


def encode(snapshot: Snapshot) -> bytes:
    """Encode a snapshot as msgpack bytes (no pickle; see docs/format.md)."""
    states = encode_states(snapshot.states)
    digest = hashlib.sha256(states).hexdigest()
    # cached_property: reuse the encoding we just made rather than computing it again.
    snapshot.__dict__.setdefault("digest", digest)
    packer = msgpack.Packer(default=_default, use_bin_type=True)
    pack = packer.pack
    # Each top-level value encoded on its own; plain ones need no canonical walk.
    try:
        values = {
            "created": pack(float(snapshot.created)),
            "digest": pack(digest),
            "environment": _pack(snapshot.environment),
            "format": pack(FORMAT_TAG),
            "metadata": _pack(snapshot.metadata.to_dict()),
            "probes": _pack(snapshot.probes),
            "states": states,
            "version": pack(FORMAT_VERSION),
        }
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(
            f"cannot encode the snapshot's metadata, environment or probes: {exc}"
        ) from exc
    parts = [packer.pack_map_header(len(values))]
    for key in sorted(values):
        parts += (pack(key), values[key])
    return b"".join(parts)


# -- decoding -------------------------------------------------------------------------------


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_BIGINT:
        if not data:
            raise DecodeError("empty BIGINT extension (ext 1)")
        return int.from_bytes(data, "big", signed=True)
    if code == EXT_NDARRAY:
        try:
            dtype, shape, raw = msgpack.unpackb(data, raw=False, use_list=False)
        except Exception as exc:
            raise DecodeError(f"malformed NDARRAY extension (ext 2): {exc}") from None
        if dtype not in _DTYPES:
            raise DecodeError(f"NDARRAY extension with unsupported dtype {dtype!r}")
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise DecodeError(f"NDARRAY extension with a bad shape {shape!r}")
        if not isinstance(raw, bytes):
            raise DecodeError("NDARRAY extension whose data is not bytes")
        itemsize = np.dtype("<" + dtype).itemsize
        if math.prod(shape) * itemsize != len(raw):
            raise DecodeError(
                f"NDARRAY extension: shape {list(shape)} of {dtype} needs "
                f"{math.prod(shape) * itemsize} bytes, got {len(raw)}"
            )
        array = np.frombuffer(raw, dtype="<" + dtype).reshape(shape)
        return array.astype(array.dtype.newbyteorder("="), copy=True)
    raise DecodeError(f"unknown msgpack extension code {code}")


def _expect(value: Any, kinds: type | tuple[type, ...], where: str) -> Any:
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join(k.__name__ for k in allowed)
        raise DecodeError(f"{where}: expected {names}, got {type(value).__name__}")
    return value


def _decode_states(raw: Any) -> dict[str, State]:
    from rngvault.families import get_family

    _expect(raw, dict, "states")
    states: dict[str, State] = {}
    for name, entry in raw.items():
        if not _GENERATOR_NAME.fullmatch(name):
            raise DecodeError(
                f"states: invalid generator name {name!r} (names match {GENERATOR_NAME_RULE})"
            )
        _expect(entry, dict, f"states[{name!r}]")
        family_name = _expect(entry.get("family"), str, f"states[{name!r}].family")
        fields = _expect(entry.get("fields"), dict, f"states[{name!r}].fields")
        family = get_family(family_name)
        if family is None:
            raise DecodeError(f"states[{name!r}]: unknown generator family {family_name!r}")
        try:
            family.validate(fields)
        except StateError as exc:
            raise DecodeError(f"invalid state: {exc.for_generator(name)}") from None
        states[name] = State(family_name, fields)
    return states


def _optional_int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is not None:
        _expect(value, int, f"metadata.{key}")
    return value


def _decode_metadata(raw: Any) -> Metadata:
    _expect(raw, dict, "metadata")
    tags = _expect(raw.get("tags", ()), (tuple, list), "metadata.tags")
    for tag in tags:
        _expect(tag, str, "metadata.tags[]")
    metrics = _expect(raw.get("metrics", {}), dict, "metadata.metrics")
    for key, value in metrics.items():
        _expect(value, (int, float, str, bool), f"metadata.metrics[{key!r}]")
    rank = _expect(raw.get("rank", 0), int, "metadata.rank")
    world_size = _expect(raw.get("world_size", 1), int, "metadata.world_size")
    if not 0 <= rank < world_size:
        raise DecodeError(f"metadata: rank {rank} is outside 0..world_size-1 ({world_size})")
    return Metadata(
        step=_optional_int(raw, "step"),
        epoch=_optional_int(raw, "epoch"),
        tags=tuple(tags),
        metrics=metrics,
        rank=rank,
        world_size=world_size,
    )


def decode(data: bytes) -> Snapshot:
    """Decode and validate snapshot bytes; DecodeError says what is wrong and where."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise DecodeError(f"{len(data)} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit")
    try:
        raw = msgpack.unpackb(
            data, raw=False, use_list=False, ext_hook=_ext_hook, strict_map_key=True
        )
    except DecodeError:
        raise
    except msgpack.ExtraData as exc:
        # A pickle or a zip (torch.save) also starts with a complete msgpack value.
        if isinstance(exc.unpacked, dict) and exc.unpacked.get("format") == FORMAT_TAG:
            raise DecodeError("trailing bytes after the snapshot") from None
        raise DecodeError(_NOT_A_SNAPSHOT) from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # Some msgpack errors (FormatError, StackError) carry no message: name them instead.
        detail = str(exc) or type(exc).__name__
        raise DecodeError(f"not valid msgpack (corrupt or truncated): {detail}") from None
    except RecursionError:
        raise DecodeError("not valid msgpack: nested too deeply") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_TAG:
        raise DecodeError(_NOT_A_SNAPSHOT)
    for key in _TOP_KEYS:
        if key not in raw:
            raise DecodeError(f"missing top-level field {key!r}")
    version = _expect(raw["version"], int, "version")
    if version > FORMAT_VERSION:
        raise DecodeError(
            f"snapshot format version {version} is newer than this rngvault reads "
            f"({FORMAT_VERSION}): upgrade rngvault"
        )
    if version < 1:
        raise DecodeError(f"invalid format version {version}")
    created = _expect(raw["created"], (int, float), "created")
    digest = _expect(raw["digest"], str, "digest")
    states = _decode_states(raw["states"])
    actual = states_digest(states)
    if actual != digest:
        raise DecodeError(
            f"digest mismatch: the states hash to {actual[:16]}..., the snapshot says "
            f"{digest[:16]}...: the data is corrupt"
        )
    environment = _expect(raw["environment"], dict, "environment")
    probes = _expect(raw.get("probes", {}), dict, "probes")
    snapshot = Snapshot(
        states=states,
        metadata=_decode_metadata(raw["metadata"]),
        environment=environment,
        created=float(created),
        probes=probes,
        format_version=version,
    )
    snapshot.__dict__["digest"] = digest
    return snapshot
