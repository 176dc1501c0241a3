"""decode on hostile input: arbitrary msgpack values, golden files with values replaced, and
golden files with bytes flipped, cut, deleted or spliced give a Snapshot or a DecodeError,
never another exception, each example within a deadline.

What decode accepts, encode writes back; and a snapshot that decodes with the golden digest
holds the golden states.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rngvault

GOLDEN = {
    path.name: path.read_bytes() for path in sorted(Path(__file__).parent.glob("data/*.msgpack"))
}
DECODED = {name: rngvault.decode(data) for name, data in GOLDEN.items()}

# A fixed number of examples, each far under its deadline (a decode of a golden file takes
# well under a millisecond): a few seconds for the whole module.
fuzz = settings(
    max_examples=200,
    deadline=timedelta(milliseconds=500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=24))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999))
)
keys = st.text(max_size=8) | st.integers(-5, 5) | st.binary(max_size=4) | st.booleans()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)


def unpack(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False, ext_hook=msgpack.ExtType, strict_map_key=False)


def decodes_or_refuses(data: bytes) -> None:
    """decode gives a Snapshot or a DecodeError with a message; an accepted snapshot encodes
    and decodes again to the same states, and the golden digest means the golden states."""
    try:
        snapshot = rngvault.decode(data)
    except rngvault.DecodeError as exc:
        assert str(exc)
        return
    assert isinstance(snapshot, rngvault.Snapshot)
    again = rngvault.decode(rngvault.encode(snapshot))
    assert again.digest == snapshot.digest and again.states == snapshot.states
    for golden in DECODED.values():
        if snapshot.digest == golden.digest:
            assert snapshot.states == golden.states


@fuzz
@given(values)
def test_arbitrary_msgpack_values(value):
    """Any msgpack value, nested maps with any keys, any extension type included."""
    decodes_or_refuses(msgpack.packb(value, use_bin_type=True))


@fuzz
@given(
    st.sampled_from(sorted(GOLDEN)),
    st.sampled_from(
        [
            "created",
            "digest",
            "environment",
            "format",
            "metadata",
            "probes",
            "states",
            "version",
            "zz",
        ]
    ),
    values,
)
def test_a_golden_file_with_a_top_level_value_replaced(name, key, value):
    """A golden snapshot with one top-level value (or a new key) set to any value."""
    raw = unpack(GOLDEN[name])
    raw[key] = value
    decodes_or_refuses(msgpack.packb(raw, use_bin_type=True))


@fuzz
@given(st.data())
def test_a_golden_state_with_a_field_replaced(data):
    """A golden state with one field, or its whole fields map, set to any value."""
    raw = unpack(GOLDEN["snapshot-v1.msgpack"])
    name = data.draw(st.sampled_from(sorted(raw["states"])))
    fields = raw["states"][name]["fields"]
    key = data.draw(st.sampled_from([*sorted(fields), "extra", None]))
    value = data.draw(values)
    if key is None:
        raw["states"][name]["fields"] = value
    else:
        fields[key] = value
    decodes_or_refuses(msgpack.packb(raw, use_bin_type=True))


@st.composite
def mutations(draw) -> bytes:
    """A golden file with bytes flipped, cut off, deleted, or copied from another place (of
    it or of another golden file) over or into it."""
    data = bytearray(GOLDEN[draw(st.sampled_from(sorted(GOLDEN)))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "delete", "splice", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            source = GOLDEN[draw(st.sampled_from(sorted(GOLDEN)))]
            start = draw(st.integers(0, len(source) - 1))
            piece = source[start : start + draw(st.integers(1, 64))]
            end = at + (len(piece) if kind == "splice" else 0)
            data[at:end] = piece
        if not data:
            break
    return bytes(data)


@fuzz
@given(mutations())
def test_a_mutated_golden_file(data):
    """Byte-level damage anywhere: headers, lengths, ext payloads, the digest."""
    decodes_or_refuses(data)
