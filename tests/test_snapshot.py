"""rngvault/_snapshot.py: State, Metadata, Snapshot and value equality."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import random

import numpy as np
import pytest

import rngvault
import rngvault._snapshot
from rngvault import _codec, _format
from rngvault._snapshot import values_equal


def snapshot_of(**generators) -> rngvault.Snapshot:
    return rngvault.capture(generators, include_globals=False)


def test_states_compare_by_family_and_value():
    """Two captures of the same position are equal States; another position or family is not."""
    rng = np.random.default_rng(1)
    a = snapshot_of(g=rng).states["g"]
    b = snapshot_of(g=rng).states["g"]
    assert a == b and a is not b
    rng.random()
    assert snapshot_of(g=rng).states["g"] != a
    assert rngvault.State("other", a.fields) != a


def test_state_and_snapshot_are_frozen():
    """States and snapshots cannot be changed after they are made."""
    snapshot = snapshot_of(g=random.Random(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.states["g"].family = "numpy.legacy"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.created = 0.0  # type: ignore[misc]


def test_digest_covers_the_states_only():
    """The digest is the SHA-256 of the states' encoding: the same states with other metadata,
    environment or time have the same digest, yet the snapshots are not equal."""
    states = snapshot_of(g=random.Random(1)).states
    a = rngvault.Snapshot(states, created=1.0)
    b = rngvault.Snapshot(
        states, metadata=rngvault.Metadata(step=3), environment={"x": 1}, created=2.0
    )
    assert a.digest == b.digest == _format.states_digest(states)
    assert len(a.digest) == 64 and int(a.digest, 16) >= 0
    assert a != b
    assert a == rngvault.Snapshot(dict(states), created=1.0)


def test_snapshot_equality_looks_at_metadata_environment_and_time():
    """Snapshots are equal when states, metadata, environment and created are equal."""
    states = snapshot_of(g=random.Random(1)).states
    base = rngvault.Snapshot(states, metadata=rngvault.Metadata(epoch=1), created=5.0)
    assert base == rngvault.Snapshot(states, metadata=rngvault.Metadata(epoch=1), created=5.0)
    assert base != rngvault.Snapshot(states, metadata=rngvault.Metadata(epoch=2), created=5.0)
    assert base != rngvault.Snapshot(states, metadata=base.metadata, created=6.0)
    assert base != rngvault.Snapshot(
        states, metadata=base.metadata, environment={"numpy": "2"}, created=5.0
    )


def test_describe_and_repr_name_every_generator():
    """describe() maps each name to its position; repr shows the digest and the names."""
    snapshot = snapshot_of(a=random.Random(1), b=np.random.RandomState(2))
    assert snapshot.describe() == {"a": "MT index 624/624", "b": "MT pos 624/624"}
    assert repr(snapshot) == f"<Snapshot {snapshot.digest[:12]} [a, b]>"


def test_describe_of_an_unknown_family_says_so():
    """A state of a family this version does not know describes itself as unknown."""
    assert rngvault.State("numpy.quantum", {}).describe() == "unknown family 'numpy.quantum'"


def test_metadata_defaults_and_dict():
    """Metadata defaults to no step/epoch, no tags or metrics, rank 0 of 1."""
    assert rngvault.Metadata().to_dict() == {
        "step": None,
        "epoch": None,
        "tags": [],
        "metrics": {},
        "rank": 0,
        "world_size": 1,
    }
    metadata = rngvault.Metadata(step=10, tags=("a",), metrics={"loss": 0.5}, rank=1, world_size=2)
    assert metadata.to_dict()["tags"] == ["a"]
    assert metadata.to_dict()["metrics"] == {"loss": 0.5}


def test_snapshot_defaults():
    """A new snapshot takes the current format version and time, and empty extras."""
    snapshot = rngvault.Snapshot({})
    assert snapshot.format_version == rngvault.FORMAT_VERSION
    assert snapshot.created > 1.7e9
    assert (snapshot.environment, snapshot.probes) == ({}, {})
    assert snapshot.metadata == rngvault.Metadata()


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), True),
        (np.array([1, 2], np.uint32), np.array([1, 2], np.uint64), False),
        (np.array([1, 2]), np.array([[1, 2]]), False),
        (np.array([1, 2]), [1, 2], False),
        ((1, [2, 3]), [1, (2, 3)], True),
        (tuple(range(624)), list(range(624)), True),
        (tuple(range(624)), (*range(623), 624), False),
        ((1, 2), (1, True), False),
        ((1, 2), (1, 2.0), False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        (b"ab", bytearray(b"ab"), True),
        (b"ab", "ab", False),
        (float("nan"), float("nan"), True),
        (1, True, False),
        (1, 1.0, False),
        (None, None, True),
    ],
    ids=[
        "nan-arrays",
        "dtype",
        "shape",
        "array-vs-list",
        "tuple-vs-list",
        "int-sequences",
        "int-sequences-differ",
        "int-vs-bool-in-sequence",
        "int-vs-float-in-sequence",
        "extra-key",
        "bytes-bytearray",
        "bytes-vs-str",
        "nan",
        "int-vs-bool",
        "int-vs-float",
        "none",
    ],
)
def test_values_equal(a, b, equal):
    """values_equal compares arrays by dtype, shape and value (NaN equal to NaN), sequences
    of any kind by items, and scalars by type and value."""
    assert values_equal(a, b) is equal
    assert values_equal(b, a) is equal


def test_encode_does_not_touch_the_snapshot():
    """encode() computes the digest it writes without caching it on the snapshot."""
    snapshot = snapshot_of(g=random.Random(1))
    data = rngvault.encode(snapshot)
    assert "digest" not in vars(snapshot)
    assert rngvault.decode(data).digest == snapshot.digest


def test_decode_gives_the_digest_it_checked(monkeypatch):
    """A decoded snapshot carries the digest decode verified; it is not computed again."""
    data = rngvault.encode(snapshot_of(g=random.Random(1)))

    def fail(states):
        raise AssertionError("the digest was computed again")

    monkeypatch.setattr(rngvault._snapshot, "states_digest", fail)
    decoded = rngvault.decode(data)
    assert (
        decoded.digest
        == _format.decode(data).digest
        == hashlib.sha256(_codec.encode_states(decoded.states)).hexdigest()
    )


def test_replaced_states_get_their_own_digest():
    """dataclasses.replace with other states gives the digest of those states, also from a
    decoded snapshot (whose digest was given by decode)."""
    a = snapshot_of(g=random.Random(1))
    b = snapshot_of(g=random.Random(2))
    decoded = rngvault.decode(rngvault.encode(a))
    assert decoded.digest == a.digest
    assert dataclasses.replace(decoded, states=b.states).digest == b.digest
    assert dataclasses.replace(a, states=b.states).digest == b.digest


def test_copies_with_a_ref_keep_the_digest_and_encode_hashes_the_states_once(monkeypatch, tmp_path):
    """A Vault stores and reads snapshots without encoding their states a second time to
    digest them: encode_with_digest gives the digest it wrote, and _with() carries it."""
    snapshot = snapshot_of(g=random.Random(1))
    data, digest = _format.encode_with_digest(snapshot)
    assert data == rngvault.encode(snapshot) and digest == rngvault.decode(data).digest

    def fail(states):
        raise AssertionError("the digest was computed again")

    monkeypatch.setattr(rngvault._snapshot, "states_digest", fail)
    decoded = rngvault.decode(data)
    ref = rngvault.SnapshotRef("a/b", "s", digest)
    assert decoded._with(ref=ref).digest == digest
    with rngvault.Vault(tmp_path, run="a/b") as vault:
        taken = vault.snapshot("s", durable=True)
        assert taken.ref is not None and taken.digest == taken.ref.digest
        assert vault.get("s").digest == taken.digest


def test_the_digest_needs_no_import_of_the_format_module():
    """The digest lives with the codec, which imports neither _snapshot nor _format, and
    _snapshot imports it at the top (no import inside a function: no cycle to work around)."""
    for module, forbidden in (
        (_codec, {"rngvault._snapshot", "rngvault._format"}),
        (rngvault._snapshot, {"rngvault._format"}),
    ):
        tree = ast.parse(inspect.getsource(module))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and not _type_checking_only(tree, node)
        }
        assert not imported & forbidden, module.__name__
    snapshot_tree = ast.parse(inspect.getsource(rngvault._snapshot))
    top_level = {node.module for node in snapshot_tree.body if isinstance(node, ast.ImportFrom)}
    assert "rngvault._codec" in top_level


def _type_checking_only(tree: ast.Module, node: ast.ImportFrom) -> bool:
    """Whether ``node`` sits in an ``if TYPE_CHECKING:`` block of ``tree``."""
    return any(
        isinstance(block, ast.If)
        and isinstance(block.test, ast.Name)
        and block.test.id == "TYPE_CHECKING"
        and node in block.body
        for block in tree.body
    )


def test_a_decoded_state_changed_since_is_checked_again_by_restore():
    """decode validated the states, but their fields are plain maps and arrays: a pos of
    700 (NumPy would read past its key) or a key array changed in place since is refused by
    restore, which touches nothing."""
    rs = np.random.RandomState(5)
    decoded = rngvault.decode(rngvault.encode(snapshot_of(rs=rs)))
    fields = decoded.states["rs"].fields
    target = np.random.RandomState(6)
    before = target.get_state(legacy=False)
    fields["pos"] = 700  # type: ignore[index]
    with pytest.raises(rngvault.RestoreError, match="'pos'.*700"):
        rngvault.restore(decoded, {"rs": target}, include_globals=False)
    fields["pos"] = 3  # type: ignore[index]
    fields["key"].dtype = np.uint64  # in place: 312 words now, the same bytes
    with pytest.raises(rngvault.RestoreError, match="'key'"):
        rngvault.restore(decoded, {"rs": target}, include_globals=False)
    after = target.get_state(legacy=False)
    assert np.array_equal(after["state"]["key"], before["state"]["key"])
    assert after["state"]["pos"] == before["state"]["pos"]
