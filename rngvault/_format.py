"""The snapshot format: msgpack, no pickle, versioned. docs/format.md is its specification.

A snapshot is one msgpack map::

    {"format": "rngvault-snapshot", "version": 1, "created": float64, "digest": hex str,
     "states": {name: {"family": str, "fields": map}}, "metadata": map, "environment": map,
     "probes": map}

Values are encoded by ``rngvault._codec`` (canonical msgpack plus BIGINT and NDARRAY). The
``states`` map must be in canonical form, and ``digest`` is the SHA-256 of its bytes as they
stand in the file. ``decode`` reads any input in bounded time and memory and raises
``DecodeError`` and nothing else:

- the states are unpacked in C, checked canonical by packing them again in C (the long
  integer arrays, MT keys, checked from their bytes instead), and hashed as written;
- everything else is read with msgpack hooks that count what they build, so a body made of
  millions of tiny values is refused after ``MAX_ITEMS`` of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from functools import partial
from itertools import pairwise
from typing import Any

import msgpack

from rngvault._codec import (
    EXT_BIGINT,
    EXT_NDARRAY,
    INT_MAX,
    INT_MIN,
    decode_ext,
    encode_states,
    kind,
    pack_value,
    packb,
    show,
    states_digest,
)
from rngvault._errors import DecodeError, EncodeError, StateError
from rngvault._names import _GENERATOR_NAME, GENERATOR_NAME_RULE
from rngvault._snapshot import FORMAT_VERSION, Metadata, Snapshot, State
from rngvault.families import get_family

__all__ = [
    "FORMAT_TAG",
    "MAX_DEPTH",
    "MAX_EXTS",
    "MAX_EXTS_PER_STATE",
    "MAX_ITEMS",
    "MAX_PROBE_VALUES",
    "MAX_SNAPSHOT_BYTES",
    "MAX_STATES",
    "MAX_STATE_BYTES",
    "MAX_TOP_LEVEL_KEYS",
    "decode",
    "encode",
    "encode_states",
    "encode_with_digest",
    "states_digest",
]

FORMAT_TAG = "rngvault-snapshot"
_REQUIRED = ("format", "version", "created", "digest", "states", "metadata", "environment")
_NOT_A_SNAPSHOT = "not an rngvault snapshot (no 'format': 'rngvault-snapshot' map)"

# The decode bounds, documented in docs/format.md ("Bounds").
MAX_SNAPSHOT_BYTES = 64 * 2**20  # 1024 DataLoaders mid-epoch (five torch CPU states): 26 MB
MAX_STATES = 1024  # generators in one snapshot: their validation stays within 50 ms
MAX_DEPTH = 8  # maps and arrays nest at most this deep, the top-level map counting 1
MAX_ITEMS = 2**17  # array elements and map entries outside states; also per array or map
MAX_EXTS = 1024  # extension values outside states
MAX_EXTS_PER_STATE = 72  # extension values in states, per generator (a valid one has <= 67)
MAX_STATE_BYTES = 32 * 2**10  # one state's encoding (the largest, a DataLoader mid-epoch: 26 KB)
MAX_PROBE_VALUES = 16  # values in one generator's probe (version 1 probes have 1 to 4)
MAX_TOP_LEVEL_KEYS = 64

# Arrays at least this long inside states are checked for canonical form from their bytes
# (see _States.verify_array): packing the 624 ints of an MT key again costs more than
# unpacking them did.
_LONG_ARRAY = 64

_SCALARS = frozenset({type(None), bool, int, float, str})
# An ExtType built without its Python-level argument checks (done by the ext hook).
_new_ext: Callable[[tuple[int, bytes]], msgpack.ExtType] = partial(tuple.__new__, msgpack.ExtType)


# -- encoding -------------------------------------------------------------------------------


def encode(snapshot: Snapshot) -> bytes:
    """Encode a snapshot as msgpack bytes (no pickle; see docs/format.md).

    The environment, metadata and probes are checked with decode's own rules, so that what
    encode writes, decode reads: EncodeError names the part and the value otherwise.
    """
    return encode_with_digest(snapshot)[0]


def encode_with_digest(snapshot: Snapshot) -> tuple[bytes, str]:
    """``encode(snapshot)`` and the digest it wrote, from one encoding of the states."""
    if len(snapshot.states) > MAX_STATES:
        raise EncodeError(
            f"a snapshot holds at most {MAX_STATES} generators; this one has {len(snapshot.states)}"
        )
    _check_family_counts(snapshot.states)
    states = encode_states(snapshot.states)
    digest = hashlib.sha256(states).hexdigest()
    packer = msgpack.Packer(use_bin_type=True, buf_size=256)
    pack = packer.pack
    try:
        values = {
            "created": pack(float(snapshot.created)),
            "digest": pack(digest),
            "environment": pack_value(snapshot.environment),
            "format": pack(FORMAT_TAG),
            "metadata": pack_value(snapshot.metadata.to_dict()),
            "probes": pack_value(snapshot.probes),
            "states": states,
            "version": pack(needed_version(snapshot.states)),
        }
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(
            f"cannot encode the snapshot's metadata, environment or probes: {exc}"
        ) from exc
    try:
        _check_extras_as_written(values, snapshot.states)
    except DecodeError as exc:
        raise EncodeError(f"cannot encode the snapshot, decode would refuse it: {exc}") from None
    parts = [packer.pack_map_header(len(values))]
    for key in sorted(values):
        parts += (pack(key), values[key])
    return b"".join(parts), digest


def _check_family_counts(states: Mapping[str, State]) -> None:
    """Encode refuses more states of a family than decode reads (``Family.max_states``)."""
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state.family] = counts.get(state.family, 0) + 1
    for name, count in counts.items():
        family = get_family(name)
        if family is not None and family.max_states is not None and count > family.max_states:
            raise EncodeError(
                f"a snapshot holds at most {family.max_states} {name} states; this one has {count}"
            )


def needed_version(states: Mapping[str, State]) -> int:
    """The oldest format version that holds these states: 1 unless one of them uses what a
    later version added, so that readers of version 1 read every snapshot that can be."""
    version = 1
    for state in states.values():
        family = get_family(state.family)
        if family is not None:
            version = max(version, family.version(state.fields))
    return version


def _check_extras_as_written(values: Mapping[str, bytes], names: Collection[str]) -> None:
    for key in ("environment", "metadata", "probes"):
        if values[key] == b"\x80":  # an empty map (no environment or probes) is valid
            continue
        hooks = _Extras()
        hooks.where = key
        value = msgpack.unpackb(
            values[key],
            raw=False,
            use_list=False,
            strict_map_key=False,
            object_pairs_hook=hooks.pairs,
            list_hook=hooks.array,
            ext_hook=hooks.ext,
        )
        if key == "environment":
            _check_environment(value)
        elif key == "metadata":
            _decode_metadata(value)
        else:
            _check_probes(value, names)


# -- decoding: the top level ------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview) -> Snapshot:
    """Decode and validate snapshot bytes; DecodeError says what is wrong and where.

    Any input is read in bounded time (docs/format.md, "Bounds") and raises DecodeError and
    nothing else, or gives a Snapshot whose states each family has validated.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > MAX_SNAPSHOT_BYTES:
        raise DecodeError(f"{size} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit")
    if not isinstance(data, bytes):
        data = bytes(data)
    top, start, end = _read_top_level(data)
    version = top["version"]
    if type(version) is not int:
        raise DecodeError(f"version: expected an int, got {_got(version)}")
    if version > FORMAT_VERSION:
        raise DecodeError(
            f"snapshot format version {show(version)} is newer than this rngvault reads "
            f"({FORMAT_VERSION}): upgrade rngvault"
        )
    if version < 1:
        raise DecodeError(f"invalid format version {show(version)}")
    created = _created(top["created"])
    digest = top["digest"]
    if type(digest) is not str or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise DecodeError(f"digest: expected 64 lowercase hex digits, got {_got(digest)}")
    span = data[start:end]
    states = _read_states(span)
    for name, state in states.items():
        needs = get_family(state.family).version(state.fields)  # type: ignore[union-attr]
        if needs > version:
            raise DecodeError(
                f"states[{name!r}]: this {state.family} state uses what format version "
                f"{needs} added, but the snapshot says version {version}"
            )
    actual = hashlib.sha256(span).hexdigest()
    if actual != digest:
        raise DecodeError(
            f"digest mismatch: the states hash to {actual[:16]}..., the snapshot says "
            f"{digest[:16]}...: the data is corrupt"
        )
    metadata = _decode_metadata(top["metadata"])
    environment = _check_environment(top["environment"])
    probes = _check_probes(top.get("probes", {}), states)
    return Snapshot._decoded(states, metadata, environment, created, probes, version, digest)


def _read_top_level(data: bytes) -> tuple[dict[str, Any], int, int]:
    """The top-level values but states, and where the states value starts and ends."""
    hooks = _Extras()
    unpacker = msgpack.Unpacker(
        None,
        raw=False,
        use_list=False,
        strict_map_key=False,  # the pairs hook names a non-str key
        object_pairs_hook=hooks.pairs,
        list_hook=hooks.array,
        # msgpack-python turns ext -1 into a Timestamp itself, never calling ext_hook: the
        # checks below refuse Timestamp values wherever they are (the format has no ext -1).
        ext_hook=hooks.ext,
        max_buffer_size=max(len(data), 1),
        max_array_len=MAX_ITEMS,
        max_map_len=MAX_ITEMS,
    )
    unpacker.feed(data)
    try:
        count = unpacker.read_map_header()
    except msgpack.OutOfData:
        raise DecodeError("not valid msgpack (corrupt or truncated): no data") from None
    except ValueError:
        if data[0] == 0xC1:
            raise DecodeError(
                "not an rngvault snapshot, nor valid msgpack: it starts with the byte c1, which "
                "msgpack never uses"
            ) from None
        raise DecodeError(
            f"not an rngvault snapshot: the data is a msgpack {_header_kind(data[0])}, not a map"
        ) from None
    if count > MAX_TOP_LEVEL_KEYS:
        raise DecodeError(f"the top-level map has {count} entries; at most {MAX_TOP_LEVEL_KEYS}")
    top: dict[str, Any] = {}
    span = None
    try:
        for _ in range(count):
            # A key is unpacked only once its first byte says it is a str.
            position = unpacker.tell()
            first = data[position] if position < len(data) else 0xA0
            if not (0xA0 <= first <= 0xBF or 0xD9 <= first <= 0xDB):
                raise DecodeError(
                    f"the top-level map has a key that is {_header_kind(first)}, not str"
                )
            key = unpacker.unpack()
            if key in top:
                raise DecodeError(f"duplicate top-level key {key!r}")
            hooks.where = key if key in _KNOWN else f"top-level key {key!r}"
            if key == "states":
                start = unpacker.tell()
                unpacker.skip()
                span = start, unpacker.tell()
                top[key] = None
                continue
            top[key] = unpacker.unpack()
            if key == "format" and top[key] != FORMAT_TAG:
                raise DecodeError(_NOT_A_SNAPSHOT)
    except msgpack.OutOfData:
        raise DecodeError(
            f"not valid msgpack (corrupt or truncated): the data ends inside {hooks.where}"
        ) from None
    except DecodeError:
        raise
    except (ValueError, OverflowError, msgpack.UnpackException) as exc:
        # Some msgpack errors (FormatError, StackError) carry no message: name them instead.
        detail = str(exc) or type(exc).__name__
        raise DecodeError(f"not valid msgpack (in {hooks.where}): {detail}") from None
    if top.get("format") != FORMAT_TAG:
        raise DecodeError(_NOT_A_SNAPSHOT)
    if unpacker.tell() != len(data):
        raise DecodeError("trailing bytes after the snapshot")
    if not top.keys() >= _KNOWN_REQUIRED:
        missing = next(key for key in _REQUIRED if key not in top)
        raise DecodeError(f"missing top-level field {missing!r}")
    assert span is not None  # "states" is required
    for key in top.keys() - _KNOWN:
        _check_tree(top[key], f"top-level key {key!r}", 2)
    return top, span[0], span[1]


_KNOWN_REQUIRED = frozenset(_REQUIRED)
_KNOWN = frozenset({*_REQUIRED, "probes"})


def _created(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise DecodeError(f"created: {show(value)} is out of range for a time") from None
    raise DecodeError(f"created: expected a float, got {_got(value)}")


def _got(value: Any) -> str:
    """What a wrong value is, for "expected X, got Y" messages."""
    if value is None or type(value) is msgpack.Timestamp:
        return kind(value)
    if type(value) in _SCALARS and not (type(value) is int and not INT_MIN <= value <= INT_MAX):
        return f"{kind(value)} {show(value)}"
    return show(value)


def _path(root: str, keys: tuple[Any, ...]) -> str:
    return root + "".join(f"[{key!r}]" for key in keys)


def _header_kind(byte: int) -> str:
    """The msgpack kind a value's first byte announces."""
    if byte <= 0x7F or byte >= 0xE0 or 0xCC <= byte <= 0xD3:
        return "int"
    if byte <= 0x8F or byte in (0xDE, 0xDF):
        return "map"
    if byte <= 0x9F or byte in (0xDC, 0xDD):
        return "array"
    if byte <= 0xBF or 0xD9 <= byte <= 0xDB:
        return "str"
    return {0xC0: "nil", 0xC2: "bool", 0xC3: "bool", 0xCA: "float", 0xCB: "float"}.get(
        byte, "bin" if 0xC4 <= byte <= 0xC6 else "ext" if byte != 0xC1 else "the unused byte c1"
    )


# -- decoding: everything outside states ------------------------------------------------------


class _Extras:
    """msgpack hooks for the values outside ``states``: map keys are str and unique, and at
    most MAX_ITEMS items and MAX_EXTS extension values are built in all, so the cost of
    reading them is bounded whatever the body holds."""

    __slots__ = ("exts", "items", "where")

    def __init__(self) -> None:
        self.items = 0
        self.exts = 0
        self.where = "the top-level map"

    def _count(self, items: int) -> None:
        self.items += items
        if self.items > MAX_ITEMS:
            raise DecodeError(
                f"{self.where}: more than {MAX_ITEMS} items (array elements and map entries) "
                "outside states"
            )

    def pairs(self, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        self._count(len(pairs))
        for key, _value in pairs:
            if type(key) is not str:
                raise DecodeError(f"{self.where}: a map key is {_got(key)}, not a str")
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            for key, _value in pairs:
                if key in seen:
                    raise DecodeError(f"{self.where}: duplicate map key {show(key)}")
                seen.add(key)
        return out

    def array(self, items: tuple[Any, ...]) -> tuple[Any, ...]:
        self._count(len(items))
        return items

    def ext(self, code: int, data: bytes) -> Any:
        self.exts += 1
        if self.exts > MAX_EXTS:
            raise DecodeError(f"{self.where}: more than {MAX_EXTS} extension values outside states")
        try:
            return decode_ext(code, data)
        except DecodeError as exc:
            raise DecodeError(f"{self.where}: {exc}") from None


def _check_tree(value: Any, where: str, depth: int, *, plain: bool = False) -> None:
    """A value whose containers nest at most MAX_DEPTH deep (``depth`` is the depth
    ``value`` would have), with no msgpack timestamp (ext -1) anywhere; with ``plain``, a
    JSON-like one too (nil, bool, int, float, str, array and map), as the environment is."""
    kind_ = type(value)
    if kind_ is dict or kind_ is tuple:
        if depth > MAX_DEPTH:
            raise DecodeError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        items = value.items() if kind_ is dict else enumerate(value)
        for key, item in items:
            if plain or type(item) in _TREE:  # other leaves need no look unless plain
                _check_tree(item, f"{where}[{key!r}]", depth + 1, plain=plain)
    elif kind_ is msgpack.Timestamp:
        raise DecodeError(f"{where}: a msgpack timestamp (ext -1), which the format does not have")
    elif plain and kind_ not in _SCALARS:
        raise DecodeError(
            f"{where}: expected nil, bool, int, float, str, array or map, got {_got(value)}"
        )


_TREE = frozenset({dict, tuple, msgpack.Timestamp})


def _check_environment(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise DecodeError(f"environment: expected a map, got {_got(value)}")
    _check_tree(value, "environment", 2, plain=True)
    flags = value.get("flags")
    if "flags" in value:
        if type(flags) is not dict:
            raise DecodeError(f"environment['flags']: expected a map, got {_got(flags)}")
        for name, flag in flags.items():
            if type(flag) not in _SCALARS:
                raise DecodeError(
                    f"environment['flags'][{name!r}]: expected nil, bool, int, float or str, "
                    f"got {_got(flag)}"
                )
    return value


def _check_probes(value: Any, names: Collection[str]) -> dict[str, Any]:
    if type(value) is not dict:
        raise DecodeError(f"probes: expected a map, got {_got(value)}")
    for name, draws in value.items():
        if name not in names:
            raise DecodeError(f"probes: a probe for {show(name)}, which is not in states")
        if type(draws) is not tuple:
            raise DecodeError(f"probes[{name!r}]: expected an array, got {_got(draws)}")
        if len(draws) > MAX_PROBE_VALUES:
            raise DecodeError(f"probes[{name!r}]: {len(draws)} values; at most {MAX_PROBE_VALUES}")
        for index, draw in enumerate(draws):
            if type(draw) not in _SCALARS:
                raise DecodeError(
                    f"probes[{name!r}][{index}]: expected nil, bool, int, float or str, "
                    f"got {_got(draw)}"
                )
    return value


def _optional_int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is not None and type(value) is not int:
        raise DecodeError(f"metadata.{key}: expected an int or nil, got {_got(value)}")
    return value


_METADATA_KEYS = frozenset({"step", "epoch", "tags", "metrics", "rank", "world_size"})


def _decode_metadata(raw: Any) -> Metadata:
    if type(raw) is not dict:
        raise DecodeError(f"metadata: expected a map, got {_got(raw)}")
    for key in raw.keys() - _METADATA_KEYS:  # ignored, but bounded like every value
        _check_tree(raw[key], f"metadata[{key!r}]", 3)
    tags = raw.get("tags", ())
    if type(tags) is not tuple:
        raise DecodeError(f"metadata.tags: expected an array, got {_got(tags)}")
    for index, tag in enumerate(tags):
        if type(tag) is not str:
            raise DecodeError(f"metadata.tags[{index}]: expected a str, got {_got(tag)}")
    metrics = raw.get("metrics", {})
    if type(metrics) is not dict:
        raise DecodeError(f"metadata.metrics: expected a map, got {_got(metrics)}")
    for key, value in metrics.items():
        if type(value) not in (int, float, str, bool):
            raise DecodeError(
                f"metadata.metrics[{key!r}]: expected an int, float, str or bool, got {_got(value)}"
            )
    rank = raw.get("rank", 0)
    world_size = raw.get("world_size", 1)
    for key, value in (("rank", rank), ("world_size", world_size)):
        if type(value) is not int:
            raise DecodeError(f"metadata.{key}: expected an int, got {_got(value)}")
    if not 0 <= rank < world_size:
        raise DecodeError(
            f"metadata: rank {show(rank)} is outside 0..world_size-1 (world_size "
            f"{show(world_size)})"
        )
    return Metadata(
        step=_optional_int(raw, "step"),
        epoch=_optional_int(raw, "epoch"),
        tags=tags,
        metrics=metrics,
        rank=rank,
        world_size=world_size,
    )


# -- decoding: the states ---------------------------------------------------------------------


class _Hole:
    """A long array taken out of the states while they are packed again (see verify)."""

    __slots__ = ("container", "depth", "items", "key", "path")

    def __init__(
        self, container: dict[str, Any], key: str, items: tuple[Any, ...], path: tuple, depth: int
    ) -> None:
        self.container = container
        self.key = key
        self.items = items
        self.path = path
        self.depth = depth


def _read_states(span: bytes) -> dict[str, State]:
    """The ``states`` value, a bounded part at a time: each entry's bytes are found by
    skipping them in C and must fit in MAX_STATE_BYTES before any object is built from them;
    then consecutive entries up to _GROUP_BYTES are read and validated together (``_States``)
    before the next ones are looked at. A typical snapshot is one group; no body costs more
    than the groups up to its first bad state (16 MiB of tiny arrays took seconds when the
    whole map was built first)."""
    count = _map_length(span)
    if count is None:
        raise DecodeError(f"states: expected a map, got {_header_kind(span[0])}")
    if count > MAX_STATES:
        raise DecodeError(f"states: {count} generators; at most {MAX_STATES}")
    header = msgpack.Packer().pack_map_header(count)
    if not span.startswith(header):
        raise DecodeError(
            f"states: not the canonical encoding: a map of {count} entries starts with "
            f"{header.hex(' ')}, not {span[: len(header) + 2].hex(' ')}"
        )
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(span), 1))
    unpacker.feed(span)
    unpacker.read_map_header()
    entries: list[tuple[int, int]] = []  # where each entry (name and state) starts and ends
    previous = None
    try:
        for _ in range(count):
            start = unpacker.tell()
            first_byte = span[start]
            if not (0xA0 <= first_byte <= 0xBF or 0xD9 <= first_byte <= 0xDB):
                # a key of another kind is refused before anything is built from it
                raise DecodeError(f"states: a map key is {_header_kind(first_byte)}, not a str")
            name = unpacker.unpack()
            middle = unpacker.tell()
            unpacker.skip()
            end = unpacker.tell()
            if previous is not None and name <= previous:
                what = "duplicate map key" if name == previous else "map keys not in sorted order"
                raise DecodeError(
                    f"states: {what} ({show(previous)} before {show(name)}): not the canonical "
                    "encoding"
                )
            if end - middle > MAX_STATE_BYTES:
                raise DecodeError(
                    f"states[{show(name)}]: {end - middle} bytes; a state takes at most "
                    f"{MAX_STATE_BYTES}"
                )
            entries.append((start, end))
            previous = name
    except DecodeError:
        raise
    except msgpack.OutOfData:
        raise DecodeError("states: the data ends inside the states map") from None
    except (ValueError, OverflowError, IndexError, msgpack.UnpackException) as exc:
        raise DecodeError(f"states: {str(exc) or type(exc).__name__}") from None
    states: dict[str, State] = {}
    counts: dict[str, int] = {}
    first = 0
    while first < len(entries):
        last = first + 1
        while last < len(entries) and entries[last][1] - entries[first][0] <= _GROUP_BYTES:
            last += 1
        if first == 0 and last == len(entries):  # the whole map (a typical snapshot)
            return _States(span, counts=counts).read()
        start, end = entries[first][0], entries[last - 1][1]
        # The group as a map of its own, read by the same checks as the whole map would be.
        group = msgpack.Packer().pack_map_header(last - first)
        states.update(
            _States(group + span[start:end], base=start - len(group), counts=counts).read()
        )
        first = last
    return states


_GROUP_BYTES = 64 * 2**10


class _States:
    """Reads a ``states`` map (``_read_states`` gives it one entry at a time): unpacked once
    in C, with extension values kept raw; then one walk checks map keys (str, sorted), depth
    and timestamps and notes the extension values and long arrays; packed again in C without
    the long arrays and compared byte for byte with the input (the long arrays are compared
    from their bytes); only then are the extension values decoded and each state validated
    by its family. ``base`` is where ``span`` starts in the whole states value (for
    messages)."""

    def __init__(self, span: bytes, base: int = 0, counts: dict[str, int] | None = None) -> None:
        self.span = span
        self.base = base
        self.counts = {} if counts is None else counts  # states per family, across groups
        self.exts = 0
        self.max_exts = 0
        self.holes: list[_Hole] = []
        # (container, key or index, raw value, path): values to decode once canonical
        self.fixups: list[tuple[Any, Any, Any, tuple]] = []

    def ext(self, code: int, data: bytes) -> msgpack.ExtType:
        self.exts += 1
        if self.exts > self.max_exts:
            raise DecodeError(
                f"states: more than {MAX_EXTS_PER_STATE} extension values per generator"
            )
        if code != EXT_BIGINT and code != EXT_NDARRAY:
            raise DecodeError(
                f"states: unknown msgpack extension code {code} (the format has 1 and 2)"
            )
        return _new_ext((code, data))

    def read(self) -> dict[str, State]:
        span = self.span
        count = _map_length(span)
        if count is None:
            raise DecodeError(f"states: expected a map, got {_header_kind(span[0])}")
        if count > MAX_STATES:
            raise DecodeError(f"states: {count} generators; at most {MAX_STATES}")
        self.max_exts = MAX_EXTS_PER_STATE * count
        try:
            raw = msgpack.unpackb(
                span,
                raw=False,
                use_list=False,
                strict_map_key=True,
                ext_hook=self.ext,
                max_array_len=MAX_ITEMS,
                max_map_len=MAX_STATES,
            )
        except DecodeError:
            raise
        except (ValueError, OverflowError, msgpack.UnpackException) as exc:
            raise DecodeError(f"states: {str(exc) or type(exc).__name__}") from None
        self.walk_states(raw)
        self.verify(raw)
        for container, key, value, path in self.fixups:
            container[key] = _decoded(value, path)
        return _validated(raw, self.counts)

    # The walk: map keys, depth, timestamps; note what to decode and the long arrays.

    def walk_states(self, raw: dict[str, Any]) -> None:
        """The states map and each state's {family, fields}; the fields by walk_map."""
        _check_keys(raw, ())
        for name, entry in raw.items():
            if name not in _VALID_NAMES:
                if not _GENERATOR_NAME.fullmatch(name):
                    raise DecodeError(
                        f"states: invalid generator name {show(name)} "
                        f"(names match {GENERATOR_NAME_RULE})"
                    )
                if len(_VALID_NAMES) < MAX_STATES:
                    _VALID_NAMES.add(name)
            if type(entry) is not dict:
                raise DecodeError(f"states[{name!r}]: expected a map, got {_got(entry)}")
            if [*entry] != _ENTRY_KEYS:
                raise DecodeError(
                    f"states[{name!r}]: expected the keys 'family' and 'fields' in this order, "
                    f"got {', '.join(map(show, entry)) or 'none'}"
                )
            family, fields = entry["family"], entry["fields"]
            if type(family) is not str:
                raise DecodeError(f"states[{name!r}].family: expected a str, got {_got(family)}")
            if type(fields) is not dict:
                raise DecodeError(f"states[{name!r}].fields: expected a map, got {_got(fields)}")
            self.walk_map(fields, (name, "fields"), 4)

    def walk_map(self, value: dict[str, Any], path: tuple, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise DecodeError(f"{_path('states', path)}: nested deeper than {MAX_DEPTH} levels")
        keys = [*value]
        try:
            in_order = keys == sorted(keys)
        except TypeError:  # str and bin keys mixed
            in_order = False
        # msgpack's strict_map_key leaves str and bin keys: sorted keys are all str if the
        # first one is.
        if not in_order or (keys and type(keys[0]) is not str):
            _check_keys(value, path)
        for key, item in value.items():
            kind_ = type(item)
            if kind_ not in _WALKED:
                continue
            if kind_ is dict:
                self.walk_map(item, (*path, key), depth + 1)
            elif kind_ is tuple:
                if len(item) >= _LONG_ARRAY:
                    hole = _Hole(value, key, item, (*path, key), depth + 1)
                    value[key] = hole
                    self.holes.append(hole)
                elif item and self.walk_array(item, (*path, key), depth + 1):
                    self.fixups.append((value, key, item, (*path, key)))
            elif kind_ is msgpack.ExtType:
                self.fixups.append((value, key, item, (*path, key)))
            else:
                raise _timestamp((*path, key))

    def walk_array(self, items: tuple[Any, ...], path: tuple, depth: int) -> bool:
        """Walk an array; True if it holds extension values (to decode)."""
        if depth > MAX_DEPTH:
            raise DecodeError(f"{_path('states', path)}: nested deeper than {MAX_DEPTH} levels")
        if _WALKED.isdisjoint(map(type, items)):  # scalars only (an MT key): at C speed
            return False
        holds_ext = False
        for index, item in enumerate(items):
            kind_ = type(item)
            if kind_ not in _WALKED:
                continue
            if kind_ is msgpack.ExtType:
                holds_ext = True
            elif kind_ is dict:
                self.walk_map(item, (*path, index), depth + 1)
            elif kind_ is tuple:
                holds_ext |= bool(item) and self.walk_array(item, (*path, index), depth + 1)
            else:
                raise _timestamp((*path, index))
        return holds_ext

    # The canonical check.

    def verify(self, raw: dict[str, Any]) -> None:
        """The states' bytes are the canonical encoding of what they decode to."""
        span = self.span
        if not self.holes:
            packed = packb(raw, len(span) + 64)
            if packed != span:
                raise self.not_canonical(0, packed)
            return
        marks: list[tuple[int, _Hole]] = []

        def mark(hole: Any) -> None:  # packs nil in the hole's place, skipped below
            if type(hole) is not _Hole:
                raise TypeError(f"cannot pack a {type(hole).__name__}")
            with packer.getbuffer() as written:
                marks.append((written.nbytes, hole))

        packer = msgpack.Packer(
            use_bin_type=True, autoreset=False, default=mark, buf_size=len(span) + 64
        )
        packer.pack(raw)
        packed = packer.bytes()
        at = done = 0  # where the comparison is in span and in packed
        for position, hole in marks:
            segment = packed[done:position]
            if not span.startswith(segment, at):
                raise self.not_canonical(at, segment)
            at = self.verify_array(at + len(segment), hole)
            done = position + 1
            hole.container[hole.key] = hole.items
        if len(span) - at != len(packed) - done or not span.endswith(packed[done:]):
            raise self.not_canonical(at, packed[done:])

    def verify_array(self, at: int, hole: _Hole) -> int:
        """Check the long array that starts at byte ``at``; return where it ends."""
        span, count = self.span, len(hole.items)
        header = (
            (b"\xdc" + count.to_bytes(2, "big"))
            if count < 2**16
            else (b"\xdd" + count.to_bytes(4, "big"))
        )
        start = at + len(header)
        end = start + 5 * count
        if span[at:start] == header and span[start:end:5] == b"\xce" * count:
            # Every element is a uint 32 (ce): canonical unless a word below 2**16 (its two
            # high bytes zero) should have had a shorter form.
            high, next_high = span[start + 1 : end : 5], span[start + 2 : end : 5]
            zero = high.find(0)
            while zero >= 0 and next_high[zero]:
                zero = high.find(0, zero + 1)
            if zero < 0:
                return end
        # Any other array: walked and packed like the rest.
        if self.walk_array(hole.items, hole.path, hole.depth):
            self.fixups.append((hole.container, hole.key, hole.items, hole.path))
        encoded = packb(hole.items, 9 * len(hole.items) + 64)
        if not span.startswith(encoded, at):
            raise self.not_canonical(at, encoded)
        return at + len(encoded)

    def not_canonical(self, at: int, canonical: bytes) -> DecodeError:
        """The error for states whose bytes from ``at`` on are not ``canonical``: a duplicate
        key if there is one, else the first byte that differs, and in which state."""
        span = self.span
        duplicate = _first_duplicate_key(span)
        if duplicate is not None:
            return DecodeError(f"states: duplicate map key {show(duplicate)}")
        offset = at + next(
            (i for i, (a, b) in enumerate(zip(span[at:], canonical, strict=False)) if a != b),
            min(len(span) - at, len(canonical)),
        )
        written, expected = span[offset : offset + 6], canonical[offset - at : offset - at + 6]
        return DecodeError(
            f"{_state_at(span, offset)}: not the canonical encoding (docs/format.md, "
            f'"Canonical encoding"): byte {offset + self.base} of the states value is '
            f"{written.hex(' ') or 'past the end'}..., the canonical encoding has "
            f"{expected.hex(' ') or 'nothing more'}... (a longer or signed int, str, bin, array, "
            "map or ext header, or a float 32, where msgpack's shortest form belongs)"
        )


_ENTRY_KEYS = ["family", "fields"]
# Generator names already seen to match the rule (names repeat from snapshot to snapshot).
_VALID_NAMES: set[str] = set()
# What the walk looks into; every other value (nil, bool, int, float, str, bin) is a leaf.
_WALKED = frozenset({dict, tuple, msgpack.ExtType, msgpack.Timestamp})


def _check_keys(value: dict[str, Any], path: tuple) -> None:
    """A map of the states has str keys in sorted order (duplicates are caught by verify)."""
    keys = [*value]
    # msgpack's strict_map_key leaves str and bytes keys, and sorted() refuses to compare
    # the two: sorted keys are all str if the first one is.
    try:
        in_order = keys == sorted(keys)
    except TypeError:
        in_order = False
    if (keys and type(keys[0]) is not str) or not in_order:
        for key in keys:
            if type(key) is not str:
                raise DecodeError(f"{_path('states', path)}: a map key is {_got(key)}, not a str")
        a, b = next((a, b) for a, b in pairwise(keys) if a > b)
        raise DecodeError(
            f"{_path('states', path)}: map keys not in sorted order ({show(a)} before "
            f"{show(b)}): not the canonical encoding"
        )


def _state_at(span: bytes, offset: int) -> str:
    """Which state of the (already unpacked once) states map holds byte ``offset``."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(span))
    unpacker.feed(span)
    for _ in range(unpacker.read_map_header()):
        name = unpacker.unpack()
        unpacker.skip()
        if unpacker.tell() > offset:
            return f"states[{show(name)}]"
    return "states"


def _map_length(span: bytes) -> int | None:
    """The entry count of the map header ``span`` starts with, or None if it is no map."""
    first = span[0]
    if 0x80 <= first <= 0x8F:
        return first & 0x0F
    if first == 0xDE:
        return int.from_bytes(span[1:3], "big")
    if first == 0xDF:
        return int.from_bytes(span[1:5], "big")
    return None


def _first_duplicate_key(span: bytes) -> Any:
    """A key that some map of the (already unpacked once) states holds twice, or None."""
    found: list[Any] = []

    def pairs(items: list[tuple[Any, Any]]) -> dict[Any, Any]:
        seen = set()
        for key, _value in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return {}

    msgpack.unpackb(span, raw=False, object_pairs_hook=pairs, ext_hook=_new_ext_hook)
    return found[0] if found else None


def _new_ext_hook(code: int, data: bytes) -> msgpack.ExtType:
    return _new_ext((code, data))


def _timestamp(path: tuple) -> DecodeError:
    return DecodeError(
        f"{_path('states', path)}: a msgpack timestamp (ext -1), which the format does not have"
    )


def _decoded(value: Any, path: tuple) -> Any:
    """A raw extension value decoded, or an array with its extension values decoded."""
    if type(value) is msgpack.ExtType:
        try:
            return decode_ext(value.code, value.data)
        except DecodeError as exc:
            raise DecodeError(f"{_path('states', path)}: {exc}") from None
    if type(value) is tuple:
        return tuple(_decoded(item, (*path, index)) for index, item in enumerate(value))
    return value


def _validated(raw: dict[str, Any], counts: dict[str, int]) -> dict[str, State]:
    """Each state (walked: a {family: str, fields: map}) checked by its family's validate(),
    after counting it against its family's ``max_states`` (``counts`` goes across groups)."""
    states: dict[str, State] = {}
    for name, entry in raw.items():
        family_name = entry["family"]
        family = get_family(family_name)
        if family is None:
            raise DecodeError(f"states[{name!r}]: unknown generator family {show(family_name)}")
        seen = counts[family_name] = counts.get(family_name, 0) + 1
        if family.max_states is not None and seen > family.max_states:
            raise DecodeError(
                f"states[{name!r}]: more than {family.max_states} {family_name} states; a "
                "snapshot holds at most that many"
            )
        fields = entry["fields"]
        try:
            family.validate(fields)
        except StateError as exc:
            raise DecodeError(f"invalid state: {exc.for_generator(name)}") from None
        except (OverflowError, ValueError, TypeError) as exc:
            # A validator that did not expect this value (an int too large for a float):
            # still a refusal of this state, not a crash.
            raise DecodeError(
                f"invalid state: generator {name!r}: {type(exc).__name__}: {exc}"
            ) from None
        states[name] = State(family_name, fields)
    return states
