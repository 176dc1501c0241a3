"""rngvault/_format.py: the msgpack snapshot format (docs/format.md), its codec and checks."""

from __future__ import annotations

import hashlib
import random
import re
import struct
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rngvault
from rngvault import _codec, _format
from rngvault._snapshot import values_equal
from rngvault.families import get_family
from tests import _states

TOP_KEYS = ["created", "digest", "environment", "format", "metadata", "probes", "states", "version"]
DTYPES = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8", "b1"]


def python_snapshot(seed: int = 1, **kwargs) -> rngvault.Snapshot:
    rng = random.Random(seed)
    return rngvault.capture({"rng": rng}, include_globals=False, **kwargs)


def unpack(data: bytes) -> dict:
    """The top-level map, extension values left as msgpack ExtType."""
    return msgpack.unpackb(data, raw=False, ext_hook=msgpack.ExtType, strict_map_key=False)


def pack(raw: dict) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)


# -- the layout, byte by byte -------------------------------------------------------------


def test_top_level_is_a_map_with_sorted_documented_keys():
    """A snapshot is one msgpack map with the documented keys, sorted, format tag and version."""
    raw = unpack(rngvault.encode(python_snapshot()))
    assert list(raw) == TOP_KEYS
    assert raw["format"] == "rngvault-snapshot"
    # version 1: the oldest that holds it (FORMAT_VERSION, 2, is the newest written)
    assert raw["version"] == 1 and rngvault.FORMAT_VERSION == 2
    assert raw["states"]["rng"]["family"] == "python"
    assert list(raw["states"]["rng"]) == ["family", "fields"]
    assert list(raw["states"]["rng"]["fields"]) == ["gauss_next", "index", "key"]


def test_digest_is_sha256_of_the_states_map_as_written():
    """digest = SHA-256 (hex) of the exact bytes of the "states" value inside the encoding."""
    snapshot = python_snapshot()
    data = rngvault.encode(snapshot)
    states_bytes = _codec.encode_states(snapshot.states)
    assert msgpack.packb("states") + states_bytes in data
    assert hashlib.sha256(states_bytes).hexdigest() == snapshot.digest == unpack(data)["digest"]


def test_encoding_does_not_depend_on_insertion_order():
    """Canonical ordering: states and fields given in another order encode to the same bytes."""
    snapshot = rngvault.capture(
        {"b": random.Random(1), "a": np.random.default_rng(2)}, include_globals=False
    )
    shuffled = {
        name: rngvault.State(state.family, dict(reversed(list(state.fields.items()))))
        for name, state in reversed(list(snapshot.states.items()))
    }
    other = rngvault.Snapshot(shuffled, created=snapshot.created)
    assert rngvault.encode(other) == rngvault.encode(snapshot)
    assert other.digest == snapshot.digest


@pytest.mark.parametrize(
    ("value", "payload"),
    [
        (2**64, b"\x01" + bytes(8)),
        (2**127, b"\x00\x80" + bytes(15)),
        (2**128 - 1, b"\x00" + b"\xff" * 16),
        (-(2**63) - 1, b"\xff\x7f" + b"\xff" * 7),
        (-(2**64), b"\xff" + bytes(8)),
        (-(2**71), b"\xff\x80" + bytes(8)),  # the writer's rule: 10 bytes, where 9 would do
    ],
)
def test_bigint_is_ext_1_big_endian_twos_complement_minimal_length(value, payload):
    """Integers outside int64/uint64 are ext 1 with the minimal big-endian two's complement."""
    encoded = _codec.pack_value({"v": value})
    assert encoded == msgpack.packb({"v": msgpack.ExtType(1, payload)})
    raw = msgpack.unpackb(encoded, ext_hook=_codec.decode_ext)
    assert raw["v"] == value


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 0, -1])
def test_ints_within_int64_or_uint64_stay_msgpack_ints(value):
    """Only integers msgpack cannot hold become BIGINT."""
    assert _codec.pack_value({"v": value}) == msgpack.packb({"v": value})


def test_bigint_inside_a_sequence_is_encoded():
    """A big int inside a list or tuple is found too (seed_seq.spawn_key may hold one)."""
    encoded = _codec.pack_value({"v": (1, 2**70, [2**200])})
    decoded = msgpack.unpackb(encoded, ext_hook=_codec.decode_ext)
    assert decoded == {"v": [1, 2**70, [2**200]]}


def test_ndarray_is_ext_2_with_dtype_shape_and_little_endian_bytes():
    """An array is ext 2 whose payload is msgpack [dtype, shape, C-order little-endian bytes]."""
    array = np.array([[1, 2, 3], [4, 5, 258]], dtype=">u2")  # big-endian in memory
    encoded = _codec.pack_value({"a": array})
    ext = msgpack.unpackb(encoded, ext_hook=msgpack.ExtType)["a"]
    assert ext.code == 2
    data = bytes([1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 2, 1])
    assert ext.data == msgpack.packb(["u2", [2, 3], data], use_bin_type=True)
    decoded = msgpack.unpackb(encoded, ext_hook=_codec.decode_ext)["a"]
    assert decoded.dtype == np.dtype("u2") and np.array_equal(decoded, array)


def test_non_contiguous_array_is_written_in_c_order():
    """A strided view is written as its C-order elements."""
    view = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    decoded = msgpack.unpackb(_codec.pack_value({"a": view}), ext_hook=_codec.decode_ext)["a"]
    assert decoded.tolist() == view.tolist()


@pytest.mark.parametrize("dtype", ["c16", "U3", "M8[s]", "O"])
def test_array_of_an_unsupported_dtype_is_refused_when_encoding(dtype):
    """Only the documented dtypes are written; others are an error naming the dtype."""
    state = rngvault.State("python", {"key": np.zeros(2, dtype=dtype)})
    with pytest.raises(rngvault.StateError, match="cannot encode"):
        rngvault.encode(rngvault.Snapshot({"gen": state}))


def test_unknown_top_level_keys_are_ignored():
    """A newer writer may add top-level keys: a reader of this version ignores them."""
    snapshot = python_snapshot()
    raw = unpack(rngvault.encode(snapshot))
    raw["zz_added_later"] = {"anything": [1, 2]}
    assert rngvault.decode(pack(raw)) == snapshot


def test_probes_may_be_absent():
    """probes is optional on read (written as an empty map)."""
    snapshot = python_snapshot()
    raw = unpack(rngvault.encode(snapshot))
    del raw["probes"]
    assert rngvault.decode(pack(raw)).probes == {}


# -- decode refuses what is not a valid snapshot ------------------------------------------


def refuse(data: object, *needles: str) -> str:
    with pytest.raises(rngvault.DecodeError) as info:
        rngvault.decode(data)  # type: ignore[arg-type]
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def modified(change) -> bytes:
    """A valid encoding with ``change(raw_top_level_map)`` applied."""
    raw = unpack(rngvault.encode(python_snapshot()))
    change(raw)
    return pack(raw)


def test_every_truncation_is_a_decode_error():
    """Every proper prefix of a snapshot is refused with a DecodeError, never another error."""
    data = rngvault.encode(python_snapshot())
    for end in range(len(data)):
        refuse(data[:end])


def test_truncated_snapshot_says_so():
    """The message for cut-off data says it is corrupt or truncated."""
    data = rngvault.encode(python_snapshot())
    refuse(data[: len(data) // 2], "not valid msgpack", "truncated")


def test_trailing_bytes_are_refused():
    """Bytes after the snapshot's map are refused."""
    refuse(rngvault.encode(python_snapshot()) + b"\x00", "trailing bytes")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xc1", "not an rngvault snapshot"),  # a byte msgpack never uses
        (b"\x91" * 100_000, "not an rngvault snapshot"),  # arrays nested 100,000 deep
        (b"\x81\xa1x" + b"\x91" * 100_000, "StackError"),  # the same, as a map's value
        (b"GIF89a\x01\x00", "not an rngvault snapshot"),
        (b"\x80\x04\x95", "not an rngvault snapshot"),  # a pickle
        (b"PK\x03\x04", "not an rngvault snapshot"),  # a zip, as torch.save writes
        (msgpack.packb([1, 2, 3]), "not an rngvault snapshot"),
        (msgpack.packb({"format": "something-else"}), "not an rngvault snapshot"),
        (msgpack.packb({1: 2}), "a key that is int, not str"),
        (b"", "no data"),
    ],
    ids=[
        "reserved-byte",
        "deep-nesting",
        "deep-nesting-in-a-map",
        "gif",
        "pickle",
        "zip",
        "array",
        "other-format",
        "int-key",
        "empty",
    ],
)
def test_garbage_is_a_decode_error(data, needle):
    """Bytes that are not a snapshot are refused with a message that says what is wrong."""
    refuse(data, needle)


def test_non_bytes_are_refused():
    """decode takes bytes; a str is refused naming its type."""
    refuse("not bytes", "expected bytes, got str")


def test_oversized_data_is_refused(monkeypatch):
    """Data over MAX_SNAPSHOT_BYTES is refused before msgpack reads it."""
    monkeypatch.setattr(_format, "MAX_SNAPSHOT_BYTES", 100)
    refuse(rngvault.encode(python_snapshot()), "over the 100-byte limit")


def test_newer_format_version_is_refused():
    """A snapshot of a newer format version is refused, saying to upgrade."""
    data = modified(lambda raw: raw.update(version=rngvault.FORMAT_VERSION + 1))
    refuse(data, f"format version {rngvault.FORMAT_VERSION + 1} is newer", "upgrade rngvault")


@pytest.mark.parametrize(("version", "needle"), [(0, "invalid format version 0"), ("1", "str")])
def test_invalid_format_version_is_refused(version, needle):
    """The version is a positive integer."""
    refuse(modified(lambda raw: raw.update(version=version)), needle)


@pytest.mark.parametrize("key", ["version", "created", "digest", "states", "metadata"])
def test_missing_top_level_field_is_refused(key):
    """Each required top-level field is checked, and the message names it."""
    refuse(modified(lambda raw: raw.pop(key)), f"missing top-level field {key!r}")


def test_changed_state_value_is_a_digest_mismatch():
    """A state changed after writing (still valid on its own) no longer matches the digest."""

    def change(raw):
        raw["states"]["rng"]["fields"]["index"] = 5

    refuse(modified(change), "digest mismatch", "corrupt")


def test_changed_digest_is_a_digest_mismatch():
    """A digest that is not the states' SHA-256 is refused."""
    refuse(modified(lambda raw: raw.update(digest="0" * 64)), "digest mismatch", "0000000000000000")


def test_unknown_family_is_refused():
    """A state of a family this version does not know is refused, naming family and generator."""

    def change(raw):
        raw["states"]["rng"]["family"] = "numpy.quantum"

    refuse(modified(change), "'rng'", "unknown generator family 'numpy.quantum'")


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda r: r["states"].update({"bad name!": r["states"]["rng"]}), ["'bad name!'"]),
        (lambda r: r["states"].update(rng=[1, 2]), ["states['rng']", "expected a map, got"]),
        (lambda r: r["states"]["rng"].update(fields=None), ["states['rng'].fields", "got nil"]),
        (lambda r: r["states"]["rng"].update(family=3), ["family", "expected a str, got int 3"]),
        (lambda r: r.update(states=[]), ["states", "expected a map, got array"]),
        (lambda r: r.update(created="now"), ["created", "got str 'now'"]),
        (lambda r: r.update(environment=[]), ["environment", "expected a map"]),
    ],
    ids=[
        "generator-name",
        "state-not-map",
        "fields-not-map",
        "family-not-str",
        "states-not-map",
        "created-not-number",
        "environment-not-map",
    ],
)
def test_malformed_structure_is_refused(change, needles):
    """Each part of the structure is type-checked, and the message says where."""
    refuse(modified(change), *needles)


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda m: m.update(rank=2, world_size=2), ["rank 2 is outside"]),
        (lambda m: m.update(tags="a,b"), ["metadata.tags", "str"]),
        (lambda m: m.update(tags=["a", 1]), ["metadata.tags[1]", "int"]),
        (lambda m: m.update(metrics={"loss": [1.0]}), ["metadata.metrics['loss']"]),
        (lambda m: m.update(step=1.5), ["metadata.step", "float"]),
        (lambda m: m.update(epoch=True), ["metadata.epoch", "bool"]),
    ],
    ids=["rank", "tags-str", "tag-int", "metric-list", "step-float", "epoch-bool"],
)
def test_malformed_metadata_is_refused(change, needles):
    """Metadata fields are type-checked on read."""
    refuse(modified(lambda raw: change(raw["metadata"])), *needles)


def with_ext(code: int, payload: bytes) -> bytes:
    """A snapshot whose environment holds one extension value."""
    return modified(lambda raw: raw.update(environment={"x": msgpack.ExtType(code, payload)}))


@pytest.mark.parametrize(
    ("code", "payload", "needle"),
    [
        (3, b"", "unknown msgpack extension code 3"),
        (1, b"", "empty BIGINT"),
        (2, b"\xc1", "malformed NDARRAY"),
        (2, msgpack.packb(["c8", [1], bytes(8)]), "unsupported dtype 'c8'"),
        (2, msgpack.packb(["u1", [-1], b""]), "bad shape"),
        (2, msgpack.packb(["u1", "2", b"ab"]), "bad shape"),
        (2, msgpack.packb(["u4", [2], bytes(7)], use_bin_type=True), "needs 8 bytes, got 7"),
        (2, msgpack.packb(["u1", [2], "ab"], use_bin_type=True), "data is not bytes"),
    ],
    ids=[
        "unknown-code",
        "empty-bigint",
        "ndarray-garbage",
        "ndarray-dtype",
        "ndarray-shape",
        "ndarray-shape-type",
        "ndarray-length",
        "ndarray-data-type",
    ],
)
def test_malformed_extension_is_refused(code, payload, needle):
    """Extension values are checked wherever they appear."""
    refuse(with_ext(code, payload), needle)


# -- property tests ------------------------------------------------------------------------

properties = _states.properties

# Snapshots whose environment and probes have the shapes decode takes (docs/format.md):
# the environment JSON-like, probes short arrays of scalars for generators the snapshot holds.
plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**200), 2**200)
    | _states.floats
    | st.text(max_size=20)
)
environments = st.dictionaries(
    st.text(max_size=10),
    st.recursive(
        plain_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    ),
    max_size=4,
) | st.dictionaries(st.text(max_size=10), plain_scalars, max_size=4).map(lambda f: {"flags": f})


@st.composite
def valid_snapshots(draw) -> rngvault.Snapshot:
    held = draw(st.dictionaries(_states.names, _states.states, max_size=4))
    probes = draw(
        st.dictionaries(
            st.sampled_from(sorted(held)) if held else st.nothing(),
            st.lists(plain_scalars, max_size=_format.MAX_PROBE_VALUES),
            max_size=len(held),
        )
    )
    return rngvault.Snapshot(
        states=held,
        metadata=draw(_states.metadata),
        environment=draw(environments),
        probes=probes,
        created=draw(st.floats(0, 2**40)),
    )


@properties
@given(valid_snapshots())
def test_decode_of_encode_gives_back_the_snapshot(snapshot):
    """Round trip: every family's states, big ints, arrays of each dtype and the metadata come
    back equal, and re-encoding gives the same bytes (one encoding per snapshot)."""
    data = rngvault.encode(snapshot)
    decoded = rngvault.decode(data)
    assert decoded == snapshot
    assert decoded.digest == snapshot.digest
    assert dict(decoded.states) == dict(snapshot.states)
    assert values_equal(decoded.probes, snapshot.probes)
    assert decoded.format_version == _format.needed_version(snapshot.states)
    assert rngvault.encode(decoded) == data


@properties
@given(_states.states)
def test_every_generated_state_is_valid_and_describable(state):
    """The strategies make states each family's validate() accepts and describe() can show."""
    family = get_family(state.family)
    family.validate(state.fields)
    assert isinstance(state.describe(), str)


@properties
@given(st.sampled_from(DTYPES), _states.shapes, _states.seeds)
def test_arrays_of_every_dtype_and_shape_round_trip_bit_for_bit(dtype, shape, seed):
    """An array comes back with the same dtype, shape and bytes (NaN payloads included)."""
    raw = np.random.default_rng(seed).bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    decoded = msgpack.unpackb(_codec.pack_value({"a": array}), ext_hook=_codec.decode_ext)["a"]
    assert (decoded.dtype, decoded.shape, decoded.tobytes()) == (array.dtype, shape, raw)
    assert decoded.flags.writeable


@properties
@given(st.integers())
def test_integers_of_any_size_round_trip(value):
    """Every Python int survives, as a msgpack int or as BIGINT."""
    decoded = msgpack.unpackb(_codec.pack_value({"v": value}), ext_hook=_codec.decode_ext)
    assert decoded == {"v": value}


@properties
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(data):
    """Whatever the bytes, decode returns a snapshot or raises DecodeError with a message."""
    try:
        snapshot = rngvault.decode(data)
    except rngvault.DecodeError as exc:
        assert str(exc)
    else:
        assert isinstance(snapshot, rngvault.Snapshot)


@properties
@given(st.data())
def test_corrupted_snapshot_never_raises_anything_but_decode_error(data):
    """A snapshot with bytes overwritten decodes or raises DecodeError, never anything else,
    and a change inside the states never decodes to different states."""
    original = rngvault.capture(
        {"a": random.Random(1), "b": np.random.default_rng(2), "c": np.random.RandomState(3)},
        include_globals=False,
    )
    encoded = bytearray(rngvault.encode(original))
    position = data.draw(st.integers(0, len(encoded) - 1))
    replacement = data.draw(st.integers(0, 255))
    assume(encoded[position] != replacement)
    encoded[position] = replacement
    try:
        decoded = rngvault.decode(bytes(encoded))
    except rngvault.DecodeError:
        return
    assert dict(decoded.states) == dict(original.states)


def _bitgen_target(fields):
    return np.random.Generator(getattr(np.random, fields["bit_generator"])(0))


restorable = st.one_of(
    _states.python_fields.map(lambda f: (rngvault.State("python", f), random.Random(0))),
    _states.legacy_fields.map(
        lambda f: (rngvault.State("numpy.legacy", f), np.random.RandomState(0))
    ),
    _states.bitgen_fields.map(lambda f: (rngvault.State("numpy.bitgen", f), _bitgen_target(f))),
)


@properties
@given(restorable)
def test_generated_states_restore_into_real_generators(state_and_target):
    """Every state validate() accepts is taken by the library, and capturing after the restore
    gives it back (verified), for random.Random, RandomState and each bit generator."""
    state, target = state_and_target
    report = rngvault.restore(rngvault.Snapshot({"g": state}), {"g": target}, include_globals=False)
    assert report["g"].verified is True


@properties
@given(_states.torch_cpu_states())
def test_generated_torch_states_restore_into_a_torch_generator(state):
    """Every CPU state validate() accepts is taken by torch and captured back unchanged."""
    torch = pytest.importorskip("torch")
    snapshot = rngvault.Snapshot({"g": rngvault.State("torch.cpu", {"state": state})})
    report = rngvault.restore(snapshot, {"g": torch.Generator()}, include_globals=False)
    assert report["g"].verified is True


# -- decode refuses hostile input, with DecodeError only ------------------------------------


def bigint(value: int) -> msgpack.ExtType:
    """``value`` as BIGINT (ext 1), in the writer's canonical length."""
    return msgpack.ExtType(1, value.to_bytes(_codec.bigint_length(value), "big", signed=True))


def assemble(snapshot: rngvault.Snapshot | None = None, **values: bytes) -> bytes:
    """The encoding of ``snapshot`` (python_snapshot() by default) with the given top-level
    values replaced by exactly the given bytes; unless given, the digest is the SHA-256 of
    the states bytes as they end up, so that nothing but the replaced bytes is wrong."""
    raw = unpack(rngvault.encode(snapshot or python_snapshot()))
    body = {key: msgpack.packb(value, use_bin_type=True) for key, value in raw.items()}
    body.update(values)
    if "digest" not in values:
        body["digest"] = msgpack.packb(hashlib.sha256(body["states"]).hexdigest())
    pairs = b"".join(msgpack.packb(key) + body[key] for key in sorted(body))
    return bytes([0x80 | len(body)]) + pairs


def fixed_states(change) -> bytes:
    """python_snapshot() with ``change(raw_states)`` applied and the digest made to match."""
    states = unpack(rngvault.encode(python_snapshot()))["states"]
    change(states)
    return assemble(states=msgpack.packb(states, use_bin_type=True))


def test_an_int_too_large_for_a_float_as_created_is_refused():
    """A BIGINT of 2**1100 as the creation time is an error, not an OverflowError."""
    refuse(modified(lambda raw: raw.update(created=bigint(2**1100))), "created", "1101 bits")


def test_an_int_too_large_for_a_float_in_a_float_field_is_refused():
    """A BIGINT of 2**1100 as python's gauss_next is refused naming the generator."""

    def change(states):
        states["rng"]["fields"]["gauss_next"] = bigint(2**1100)

    refuse(fixed_states(change), "invalid state", "'rng'")


def test_an_int_beyond_the_bigint_limit_is_refused():
    """BIGINT payloads are at most MAX_BIGINT_BYTES: 2**15000 (4516 digits, past Python's
    int-to-str limit) is refused before any message could print it."""
    message = refuse(modified(lambda raw: raw.update(version=bigint(2**15000))), "version")
    assert f"at most {_codec.MAX_BIGINT_BYTES}" in message


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda raw: raw.update(version=bigint(2**2000)), "format version an integer of 2001 bits"),
        (lambda raw: raw["metadata"].update(rank=bigint(2**2000)), "rank an integer of 2001 bits"),
        (lambda raw: raw["metadata"].update(step=[bigint(2**2000)]), "metadata.step"),
    ],
    ids=["version", "rank", "step"],
)
def test_huge_ints_are_shown_by_their_size(change, needle):
    """Messages name a huge int by its bit length, never by its digits."""
    message = refuse(modified(change), needle)
    assert not re.search(r"\d{25}", message), message


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda raw: raw["metadata"].update(metrics={b"loss": 1.0}), ["metadata", "bin"]),
        (lambda raw: raw.update(environment={b"numpy": "2.4"}), ["environment", "not a str"]),
        (lambda raw: raw.update(probes={b"rng": [1.0]}), ["probes", "not a str"]),
        (lambda raw: raw.update(zz={1: 2}), ["'zz'", "int 1, not a str"]),
        (lambda raw: raw["environment"].update(x={(1, 2): 3}), ["array", "not a str"]),
    ],
    ids=["metrics-bin", "environment-bin", "probes-bin", "unknown-key-int", "array-key"],
)
def test_map_keys_that_are_not_str_are_refused(change, needles):
    """Every map key is a str, wherever the map is."""
    refuse(modified(change), *needles)


def test_a_bin_key_in_a_state_is_refused():
    """A bin key among a state's fields is refused (the states map is checked as well)."""

    def change(states):
        states["rng"]["fields"][b"index"] = 5

    refuse(fixed_states(change), "states['rng']['fields']", "not a str")


TIMESTAMP = msgpack.Timestamp(1_700_000_000, 0)  # packed as ext -1


@pytest.mark.parametrize(
    "change",
    [
        lambda raw: raw["environment"].update(taken=TIMESTAMP),
        lambda raw: raw["metadata"]["metrics"].update(taken=TIMESTAMP),
        lambda raw: raw.update(created=TIMESTAMP),
        lambda raw: raw.update(zz={"taken": [TIMESTAMP]}),
        lambda raw: raw.update(probes={"rng": [TIMESTAMP]}),
    ],
    ids=["environment", "metrics", "created", "unknown-key", "probes"],
)
def test_a_msgpack_timestamp_is_refused_anywhere(change):
    """ext -1 (msgpack's Timestamp, which msgpack-python decodes itself) is no value of the
    format, outside states..."""
    refuse(modified(change), "timestamp (ext -1)")


def test_a_msgpack_timestamp_is_refused_in_a_state():
    """...and inside one."""

    def change(states):
        states["rng"]["fields"]["gauss_next"] = TIMESTAMP

    refuse(fixed_states(change), "states['rng']['fields']['gauss_next']", "timestamp (ext -1)")


def map_bytes(*pairs: tuple[str, bytes]) -> bytes:
    """A msgpack map of these keys and already encoded values, in this order, duplicates
    included (at most 15 pairs)."""
    return bytes([0x80 | len(pairs)]) + b"".join(msgpack.packb(k) + v for k, v in pairs)


def map_of(*pairs: tuple[str, object]) -> bytes:
    return map_bytes(*((key, msgpack.packb(value, use_bin_type=True)) for key, value in pairs))


def test_a_duplicate_top_level_key_is_refused():
    """Two readers must not see two different snapshots: a key given twice is refused."""
    data = rngvault.encode(python_snapshot())
    twice = msgpack.packb("zz") + msgpack.packb(1) + msgpack.packb("zz") + msgpack.packb(2)
    refuse(bytes([data[0] + 2]) + data[1:] + twice, "duplicate top-level key 'zz'")


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("environment", map_of(("numpy", "2.4"), ("numpy", "1.26"))),
        ("metadata", map_of(("rank", 0), ("rank", 1), ("world_size", 2))),
        ("probes", map_of(("rng", [0.5]), ("rng", [0.25]))),
    ],
)
def test_a_duplicate_key_inside_a_value_is_refused(part, value):
    """A map holding a key twice is refused outside states, naming the part..."""
    refuse(assemble(**{part: value}), part, "duplicate map key")


def test_a_duplicate_key_in_a_state_is_refused():
    """...and inside states, even where the digest is that of the states without the
    duplicate (what a reader keeping the last value would check)."""
    fields = unpack(rngvault.encode(python_snapshot()))["states"]["rng"]["fields"]
    twice = map_of(*fields.items(), ("index", 5))
    states = map_bytes(("rng", map_bytes(("family", msgpack.packb("python")), ("fields", twice))))
    collapsed = {"rng": {"family": "python", "fields": {**fields, "index": 5}}}
    digest = hashlib.sha256(msgpack.packb(collapsed, use_bin_type=True)).hexdigest()
    refuse(assemble(states=states, digest=msgpack.packb(digest)), "duplicate map key 'index'")


def nested(levels: int) -> object:
    """An int inside ``levels`` arrays."""
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("part", ["environment", "zz", "metadata"])
def test_nesting_beyond_max_depth_is_refused(part):
    """Maps and arrays nest at most MAX_DEPTH deep, the top-level map counting 1: a value of
    the environment (depth 2) holds at most MAX_DEPTH - 2 levels of arrays."""
    levels = _format.MAX_DEPTH - 2
    deepest = modified(lambda raw: raw.setdefault(part, {}).update(x=nested(levels)))
    too_deep = modified(lambda raw: raw.setdefault(part, {}).update(x=nested(levels + 1)))
    if part != "metadata":  # metadata's unknown keys are checked for depth, then ignored
        assert rngvault.decode(deepest).environment is not None
    refuse(too_deep, part, f"nested deeper than {_format.MAX_DEPTH} levels")


def test_nesting_in_a_state_beyond_max_depth_is_refused():
    """The same bound holds inside states, before any family looks at the state."""

    def change(states):
        states["rng"]["fields"]["gauss_next"] = nested(_format.MAX_DEPTH)

    refuse(fixed_states(change), "states['rng']['fields']['gauss_next']", "nested deeper")


def test_a_state_larger_than_max_state_bytes_is_refused_before_it_is_built():
    """16 MiB of one-element arrays inside one state is refused from the state's size (a
    skip in C), before any object is built from it: milliseconds, not the seconds that
    building and walking it took."""
    tiny = [[0]] * 131_000

    def change(states):
        states["rng"]["fields"]["key"] = tiny
        for i in range(60):
            states[f"rng{i:02d}"] = {"family": "python", "fields": {"key": tiny}}

    data = fixed_states(change)
    assert len(data) > 15 * 2**20
    started = time.process_time()
    refuse(data, "states['rng']", f"bytes; a state takes at most {_format.MAX_STATE_BYTES}")
    assert time.process_time() - started < 1.0  # bounded work, with a wide margin for load


def test_more_items_than_max_items_outside_states_are_refused():
    """A body of many tiny arrays is refused once MAX_ITEMS of them are read."""
    tiny = [[0]] * (_format.MAX_ITEMS // 2 + 1)
    refuse(modified(lambda raw: raw["environment"].update(x=tiny)), "more than", "items")


def test_the_item_bound_holds_over_all_values_together():
    """Values each under MAX_ITEMS but over it together are refused too."""

    def change(raw):
        raw["environment"].update(x=[0] * (_format.MAX_ITEMS // 2))
        raw.update(zz=[0] * (_format.MAX_ITEMS // 2 + 1))

    refuse(modified(change), "'zz'", "more than")


def test_more_extension_values_than_max_exts_outside_states_are_refused():
    """Extension values outside states are counted: at most MAX_EXTS."""
    many = [bigint(2**70)] * (_format.MAX_EXTS + 1)
    refuse(modified(lambda raw: raw.update(zz=many)), "more than", "extension values")


def over_max_states() -> bytes:
    """A snapshot of MAX_STATES + 1 generators, written by hand (encode refuses it)."""
    state = rngvault.State("torch.cuda", {"state": bytes(16)})
    data = rngvault.encode(rngvault.Snapshot({"g": state}, created=0.0))
    states = {f"g{i:04d}": {"family": "torch.cuda", "fields": {"state": bytes(16)}}
              for i in range(_format.MAX_STATES + 1)}  # fmt: skip
    raw = unpack(data)
    raw["states"] = states
    raw["digest"] = hashlib.sha256(msgpack.packb(states)).hexdigest()
    return pack(raw)


def test_more_than_max_states_generators_are_refused_by_encode_and_decode():
    """A snapshot holds at most MAX_STATES generators (1024): encode will not write more,
    decode will not read more."""
    assert _format.MAX_STATES == 1024
    state = rngvault.State("torch.cuda", {"state": bytes(16)})
    states = {f"g{i}": state for i in range(_format.MAX_STATES + 1)}
    with pytest.raises(rngvault.EncodeError, match="at most 1024 generators; this one has 1025"):
        rngvault.encode(rngvault.Snapshot(states, created=0.0))
    refuse(over_max_states(), "1025 generators; at most 1024")


@pytest.mark.parametrize(
    ("probes", "needles"),
    [
        ({"rng": 5}, ["probes['rng']", "expected an array, got int 5"]),
        ({"other": [0.5]}, ["'other'", "not in states"]),
        ({"rng": [[0.5]]}, ["probes['rng'][0]", "got an array"]),
        ({"rng": [b"\x00"]}, ["probes['rng'][0]", "bin"]),
        ({"rng": [0.5] * 17}, ["probes['rng']", "17 values; at most 16"]),
    ],
    ids=["not-an-array", "unknown-generator", "nested", "bin", "too-long"],
)
def test_probes_of_another_shape_are_refused(probes, needles):
    """probes maps names of the snapshot's generators to at most MAX_PROBE_VALUES scalars."""
    refuse(modified(lambda raw: raw.update(probes=probes)), *needles)


@pytest.mark.parametrize(
    ("environment", "needles"),
    [
        ({"flags": [1]}, ["environment['flags']", "expected a map"]),
        ({"flags": {"x": [1]}}, ["environment['flags']['x']", "got an array"]),
        ({"numpy": b"2.4"}, ["environment['numpy']", "bin"]),
        ({"a": msgpack.ExtType(2, msgpack.packb(["u1", [1], b"\x00"]))}, ["NDARRAY"]),
    ],
    ids=["flags-array", "flag-array", "bin", "ndarray"],
)
def test_environments_of_another_shape_are_refused(environment, needles):
    """The environment is JSON-like (nil, bool, int, float, str, array, map), and its flags
    a map of scalars."""
    refuse(modified(lambda raw: raw.update(environment=environment)), *needles)


def test_environment_and_probes_take_any_scalar_big_ints_included():
    """Ints of any size (BIGINT beyond 64 bits) are scalars of the environment, its flags and
    probes; nesting within the bound is fine too."""

    def change(raw):
        raw.update(environment={"flags": {"x": bigint(2**70), "y": None}, "v": [{"a": [1.5]}]})
        raw.update(probes={"rng": [bigint(-(2**80)), 0.5, "s", True, None]})

    decoded = rngvault.decode(modified(change))
    assert decoded.environment["flags"]["x"] == 2**70
    assert decoded.probes["rng"][0] == -(2**80)


def test_values_at_every_bound_decode():
    """The bounds are inclusive: MAX_PROBE_VALUES values in a probe, MAX_EXTS extension values
    and MAX_ITEMS items outside states all decode."""

    def change(raw):
        raw.update(probes={"rng": [0.5] * _format.MAX_PROBE_VALUES})
        raw.update(zz=[bigint(2**70)] * _format.MAX_EXTS)
        used = (
            2
            + _format.MAX_EXTS
            + 1
            + sum(
                len(raw[key])
                + sum(len(v) for v in raw[key].values() if isinstance(v, (dict, list)))
                for key in ("metadata", "environment", "probes")
            )
        )
        raw.update(zy=[0] * (_format.MAX_ITEMS - used))

    assert len(rngvault.decode(modified(change)).probes["rng"]) == _format.MAX_PROBE_VALUES


def test_encode_refuses_what_decode_would_refuse():
    """encode checks the environment, metadata and probes with decode's rules."""
    states = python_snapshot().states
    with pytest.raises(rngvault.EncodeError, match=r"probes\['rng'\]"):
        rngvault.encode(rngvault.Snapshot(states, probes={"rng": 5}))
    with pytest.raises(rngvault.EncodeError, match=r"environment\['x'\]"):
        rngvault.encode(rngvault.Snapshot(states, environment={"x": b"bytes"}))


# -- the states must be in canonical form --------------------------------------------------

# A python state whose key has a small first word (written as a fixint) and a second word
# below 2**31 (the one word that a signed int 32 could hold in as many bytes as uint 32).
SMALL_KEY = (5, 70000, *range(2**31, 2**31 + 622))
LARGE_KEY = (*SMALL_KEY[1:], 2**31 - 1)


def python_state(key: tuple[int, ...]) -> rngvault.Snapshot:
    fields = {"key": key, "index": 624, "gauss_next": 0.5}
    return rngvault.Snapshot({"rng": rngvault.State("python", fields)}, created=1.0)


def pcg_state() -> rngvault.Snapshot:
    """A PCG64 state whose ``state`` is a 16-byte BIGINT (fixext 16) and ``inc`` 13 bytes."""
    fields = {
        "bit_generator": "PCG64",
        "state": {"state": 2**120 + 12345, "inc": 2**100 + 1},
        "has_uint32": 0,
        "uinteger": 0,
        "seed_seq": None,
    }
    return rngvault.Snapshot({"g": rngvault.State("numpy.bitgen", fields)}, created=1.0)


def mt_state() -> rngvault.Snapshot:
    fields = {
        "bit_generator": "MT19937",
        "state": {"key": np.arange(1, 625, dtype=np.uint32), "pos": 624},
        "seed_seq": None,
    }
    return rngvault.Snapshot({"g": rngvault.State("numpy.bitgen", fields)}, created=1.0)


def unsorted_fields(snapshot: rngvault.Snapshot) -> bytes:
    fields = dict(
        reversed(list(unpack(rngvault.encode(snapshot))["states"]["rng"]["fields"].items()))
    )
    return msgpack.packb({"rng": {"family": "python", "fields": fields}}, use_bin_type=True)


# (snapshot, canonical bytes of its states, the same states written otherwise)
NOT_CANONICAL = {
    "index-uint32": (
        python_state(SMALL_KEY),
        b"\xa5index\xcd\x02\x70",
        b"\xa5index\xce\0\0\x02\x70",
    ),
    "index-int16": (python_state(SMALL_KEY), b"\xa5index\xcd\x02\x70", b"\xa5index\xd1\x02\x70"),
    "key-word-int32": (
        python_state(LARGE_KEY),
        b"\xdc\x02\x70\xce\x00\x01\x11\x70",
        b"\xdc\x02\x70\xd2\x00\x01\x11\x70",
    ),
    "key-word-small-as-uint32": (
        python_state(SMALL_KEY),
        b"\xdc\x02\x70\x05",
        b"\xdc\x02\x70\xce\0\0\0\x05",
    ),
    "key-word-uint64": (
        python_state(LARGE_KEY),
        b"\xdc\x02\x70\xce\x00\x01\x11\x70",
        b"\xdc\x02\x70\xcf\0\0\0\0\x00\x01\x11\x70",
    ),
    "key-array32": (python_state(SMALL_KEY), b"\xdc\x02\x70", b"\xdd\0\0\x02\x70"),
    "float32": (
        python_state(SMALL_KEY),
        b"\xcb" + struct.pack(">d", 0.5),
        b"\xca" + struct.pack(">f", 0.5),
    ),
    "str8": (python_state(SMALL_KEY), b"\xa6family", b"\xd9\x06family"),
    "map16": (python_state(SMALL_KEY), b"\xa6fields\x83", b"\xa6fields\xde\0\x03"),
    "bigint-long": (
        pcg_state(),
        b"\xc7\x0d\x01\x10",
        b"\xc7\x0e\x01\x00\x10",
    ),
    "bigint-ext8-for-fixext16": (pcg_state(), b"\xd8\x01\x01\x00", b"\xc7\x10\x01\x01\x00"),
    "bigint-small-value": (pcg_state(), b"\xa8uinteger\x00", b"\xa8uinteger\xd4\x01\x00"),
    "ndarray-shape-uint32": (  # ext 16 of 2507 bytes, then 2509 with the longer dimension
        mt_state(),
        b"\xc8\x09\xcb\x02\x93\xa2u4\x91\xcd\x02\x70",
        b"\xc8\x09\xcd\x02\x93\xa2u4\x91\xce\0\0\x02\x70",
    ),
}


@pytest.mark.parametrize("digest_of", ["canonical", "as-written"])
@pytest.mark.parametrize("case", list(NOT_CANONICAL))
def test_states_not_in_canonical_form_are_refused(case, digest_of):
    """One state has one encoding: a writer using another (a longer or signed int form, an
    unsorted map, float 32, a longer str, map, array or ext header, a longer BIGINT, a BIGINT
    for a plain int, a non-canonical NDARRAY payload) is refused, whether its digest is that
    of the canonical encoding or of its own bytes: no state gets a second digest."""
    snapshot, canonical, other = NOT_CANONICAL[case]
    states = _codec.encode_states(snapshot.states)
    assert states.count(canonical) == 1, "the test's canonical bytes are not where expected"
    written = states.replace(canonical, other)
    digest = states if digest_of == "canonical" else written
    data = assemble(
        snapshot, states=written, digest=msgpack.packb(hashlib.sha256(digest).hexdigest())
    )
    refuse(data, "canonical")


def test_unsorted_fields_are_refused_naming_the_map():
    """Map keys in another order than sorted are refused, naming the map and the keys."""
    snapshot = python_state(SMALL_KEY)
    canonical = hashlib.sha256(_codec.encode_states(snapshot.states)).hexdigest()
    data = assemble(snapshot, states=unsorted_fields(snapshot), digest=msgpack.packb(canonical))
    refuse(data, "states['rng']['fields']", "not in sorted order", "'key' before 'index'")


@pytest.mark.parametrize(
    "snapshot",
    [python_state(SMALL_KEY), python_state(LARGE_KEY), pcg_state(), mt_state()],
    ids=["small-key", "large-key", "pcg", "mt"],
)
def test_canonical_states_decode_to_their_digest(snapshot):
    """The canonical bytes of these states (each case above unchanged) decode, and the digest
    is the SHA-256 of the states bytes as written."""
    data = rngvault.encode(snapshot)
    states = _codec.encode_states(snapshot.states)
    decoded = rngvault.decode(data)
    assert decoded.digest == hashlib.sha256(states).hexdigest() == snapshot.digest
    assert decoded.states == snapshot.states


def test_bigint_length_is_the_writers_rule():
    """The canonical BIGINT length is (bit_length + 8) // 8, one byte more than two's
    complement needs for negative powers of two: -2**71 takes 10 bytes, its 9-byte form is
    refused (here as metadata.step, where any int may stand)."""
    assert _codec.bigint_length(-(2**71)) == 10
    assert _codec.decode_bigint(b"\xff\x80" + bytes(8)) == -(2**71)
    with pytest.raises(rngvault.DecodeError, match="canonical encoding has"):
        _codec.decode_bigint(b"\x80" + bytes(8))
    written = modified(lambda raw: raw["metadata"].update(step=bigint(-(2**71))))
    assert rngvault.decode(written).metadata.step == -(2**71)
    nine = msgpack.ExtType(1, b"\x80" + bytes(8))
    refuse(modified(lambda raw: raw["metadata"].update(step=nine)), "metadata", "canonical")


def test_the_bigint_examples_of_the_format_doc_are_what_encode_writes():
    """Each row of docs/format.md's BIGINT table (value, bit_length, bytes, the encoding's
    leading bytes) is what the encoder writes."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
    section = doc.split("### Ext 1, BIGINT", 1)[1].split("###", 1)[0]
    rows = re.findall(r"^\| (-?2\^\d+(?: [-+] \d+)?) \| (\d+) \| (\d+) \| `([^`]*)`", section, re.M)
    assert len(rows) == 7
    for value_text, bits, size, encoded in rows:
        value = eval(value_text.replace("^", "**"))
        written = _codec.pack_value(value)
        assert (value.bit_length(), _codec.bigint_length(value)) == (int(bits), int(size))
        leading = bytes.fromhex(encoded.split("…")[0])
        assert written.startswith(leading), (value_text, written.hex(" "))
        header = 2 if 0xD4 <= written[0] <= 0xD8 else 3  # fixext, or ext 8 with its length
        assert len(written) == header + int(size), value_text
        if "…" not in encoded:
            assert written == leading, value_text


# -- versions -------------------------------------------------------------------------------


def mid_epoch_loader_snapshot() -> rngvault.Snapshot:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    loader = DataLoader(range(12), batch_size=3, shuffle=True, generator=torch.Generator())
    rngvault.capture({"loader": loader}, include_globals=False)
    running = iter(loader)
    next(running)
    return rngvault.capture({"loader": loader}, include_globals=False)


def test_a_snapshot_needing_version_2_is_written_as_version_2():
    """A DataLoader's mid-epoch position is what version 2 added: such a snapshot says
    version 2 and decodes as it; the same loader between epochs still writes version 1."""
    snapshot = mid_epoch_loader_snapshot()
    data = rngvault.encode(snapshot)
    assert unpack(data)["version"] == 2
    assert rngvault.decode(data).format_version == 2
    fields = dict(snapshot.states["loader"].fields)
    del fields["epoch"]
    between = rngvault.Snapshot({"loader": rngvault.State("dataloader", fields)}, created=0.0)
    assert unpack(rngvault.encode(between))["version"] == 1


def test_a_version_1_body_with_a_version_2_state_is_refused():
    """A body that says version 1 but holds what version 2 added is refused, naming the
    state: a reader may trust the version it reads."""
    raw = unpack(rngvault.encode(mid_epoch_loader_snapshot()))
    raw["version"] = 1
    refuse(pack(raw), "states['loader']", "format version 2 added", "says version 1")
