"""The embedded local store: atomic, immutable, content-addressed, safe for several processes."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import re
from pathlib import Path

import msgpack
import numpy as np
import pytest

import rngvault
from rngvault import LocalStore, Metadata
from rngvault._split import join, split


def _snapshot(seed: int, rank: int = 0, world_size: int = 1, **extra: object) -> rngvault.Snapshot:
    gens = {"a": np.random.default_rng(seed), "fixed": np.random.default_rng(12345)}
    meta = Metadata(rank=rank, world_size=world_size, **extra)  # type: ignore[arg-type]
    snap = rngvault.capture(gens, include_globals=False, metadata=meta)
    return dataclasses.replace(snap, created=1e9 + seed)  # same seed, same bytes


def _put(store: LocalStore, run: str, name: str, snap: rngvault.Snapshot) -> bool:
    return store.put(run, name, rngvault.encode(snap), snap)


def test_put_then_get_returns_the_same_bytes(tmp_path: Path) -> None:
    """What was put comes back byte for byte, and decodes to the same snapshot."""
    store = LocalStore(tmp_path)
    snap = _snapshot(1, step=7)
    data = rngvault.encode(snap)
    assert store.put("alice/exp", "s1", data, snap) is True
    assert store.get("alice/exp", "s1") == data
    assert rngvault.decode(store.get("alice/exp", "s1")) == snap


def test_identical_put_is_a_no_op_and_other_content_conflicts(tmp_path: Path) -> None:
    """Retrying the same bytes is safe (False); other bytes under the name raise."""
    store = LocalStore(tmp_path)
    snap = _snapshot(1)
    assert _put(store, "alice/exp", "s1", snap) is True
    assert _put(store, "alice/exp", "s1", snap) is False
    with pytest.raises(rngvault.ConflictError, match="alice/exp/s1"):
        _put(store, "alice/exp", "s1", _snapshot(2))
    assert store.get("alice/exp", "s1") == rngvault.encode(snap)


def test_identical_states_are_stored_once(tmp_path: Path) -> None:
    """Two snapshots sharing a state (in two runs) keep one blob for it."""
    store = LocalStore(tmp_path)
    _put(store, "alice/exp", "s1", _snapshot(1))
    _put(store, "bob/exp", "s1", _snapshot(2))
    blobs = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    # states: a(seed 1), a(seed 2), fixed (shared) -> 3 blobs, not 4
    assert len(blobs) == 3


def test_split_and_join_give_back_the_bytes() -> None:
    """Taking a snapshot apart by state and joining it is the identity."""
    data = rngvault.encode(_snapshot(3))
    parts = split(data)
    assert len(parts.entries) == 2
    assert join(parts.skeleton(), parts.blobs.__getitem__) == data


def test_a_corrupt_blob_is_detected(tmp_path: Path) -> None:
    """A flipped byte in a stored state is a StoreError, not wrong states."""
    store = LocalStore(tmp_path)
    _put(store, "alice/exp", "s1", _snapshot(1))
    blob = sorted(p for p in (tmp_path / "blobs").rglob("*") if p.is_file())[0]
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises(rngvault.StoreError, match="corrupt"):
        store.get("alice/exp", "s1")


def test_missing_run_name_and_rank_are_not_found(tmp_path: Path) -> None:
    """NotFoundError names what is missing; a missing rank lists the stored ones."""
    store = LocalStore(tmp_path)
    _put(store, "alice/exp", "s1", _snapshot(1, rank=1, world_size=2))
    with pytest.raises(rngvault.NotFoundError, match="no rank 0.*stored ranks: 1"):
        store.get("alice/exp", "s1", 0)
    with pytest.raises(rngvault.NotFoundError, match="'s2'"):
        store.get("alice/exp", "s2")
    with pytest.raises(rngvault.NotFoundError, match="no run 'carol/x'"):
        store.snapshots("carol/x")


def test_listing_runs_and_snapshots_with_metadata(tmp_path: Path) -> None:
    """runs() and snapshots() list what was stored, with metadata and ranks."""
    store = LocalStore(tmp_path)
    _put(store, "alice/exp", "s1", _snapshot(1, rank=0, world_size=2, epoch=3))
    _put(store, "alice/exp", "s1", _snapshot(2, rank=1, world_size=2, epoch=3))
    _put(store, "bob/other", "x", _snapshot(3))
    assert store.runs() == ["alice/exp", "bob/other"]
    [info] = store.snapshots("alice/exp")
    assert info.name == "s1" and info.ranks == (0, 1) and info.epoch == 3
    assert info.generators == {"a": "numpy.bitgen", "fixed": "numpy.bitgen"}
    assert info.world_size == 2


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    """Atomic writes clean up their temporary files."""
    store = LocalStore(tmp_path)
    for i in range(5):
        _put(store, "alice/exp", f"s{i}", _snapshot(i))
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_bad_run_names_are_refused_before_touching_disk(tmp_path: Path) -> None:
    """A path-like run or name is an InvalidNameError, never a path outside the store."""
    store = LocalStore(tmp_path)
    snap = _snapshot(1)
    for run, name in [("../x/y", "s"), ("a/b", "../../etc"), ("a", "s"), ("a/b/c", "s")]:
        with pytest.raises(rngvault.InvalidNameError):
            _put(store, run, name, snap)
    assert not (tmp_path / "runs").exists()


def _writer(root: str, worker: int, count: int) -> None:
    store = LocalStore(root)
    for i in range(count):
        snap = _snapshot(i)  # the same content in both processes: retries of each other
        store.put("team/shared", f"s{i}", rngvault.encode(snap), snap)
        own = _snapshot(1000 * (worker + 1) + i)
        store.put("team/shared", f"w{worker}-{i}", rngvault.encode(own), own)


def test_two_processes_write_one_run_without_corruption(tmp_path: Path) -> None:
    """Two processes writing the same run (and the same names) lose and corrupt nothing."""
    ctx = multiprocessing.get_context("spawn")
    count = 40
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, count)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = LocalStore(tmp_path)
    names = {info.name for info in store.snapshots("team/shared")}
    assert len(names) == 3 * count
    for i in range(count):
        assert store.get("team/shared", f"s{i}") == rngvault.encode(_snapshot(i))
        for w in range(2):
            got = rngvault.decode(store.get("team/shared", f"w{w}-{i}"))
            assert got.digest == _snapshot(1000 * (w + 1) + i).digest


def test_open_store_refuses_addresses_it_would_mistake_for_directories(tmp_path: Path) -> None:
    """host:port without http:// and unknown schemes are errors, not new directories."""
    with pytest.raises(rngvault.StoreError, match="write http://vault.lab:8000"):
        rngvault.open_store("vault.lab:8000")
    with pytest.raises(rngvault.StoreError, match="unsupported store URL 's3://b'"):
        rngvault.open_store("s3://b")
    assert isinstance(rngvault.open_store(f"file://{tmp_path}"), LocalStore)
    assert not (Path.cwd() / "vault.lab:8000").exists()


# -- damaged and tampered files ----------------------------------------------------------


def _record_path(root: Path, name: str, run: str = "alice/exp") -> Path:
    return root / "runs" / run / name / "rank-0.snap"


def _shared_blob(root: Path) -> Path:
    """The blob of the "fixed" generator, the state every _snapshot shares."""
    digest = split(rngvault.encode(_snapshot(1))).entries[1][1]
    return root / "blobs" / digest[:2] / digest


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped"])
def test_a_damaged_blob_is_rewritten_when_a_later_snapshot_shares_it(
    damage: str, tmp_path: Path
) -> None:
    """A later snapshot sharing a damaged state blob checks it, writes it again, and is
    readable; so is the earlier one from then on."""
    store = LocalStore(tmp_path)
    _put(store, "alice/exp", "s1", _snapshot(1))
    blob = _shared_blob(tmp_path)
    raw = blob.read_bytes()
    blob.write_bytes(
        {"truncated": raw[:-7], "empty": b"", "flipped": raw[:-1] + bytes([raw[-1] ^ 1])}[damage]
    )
    with pytest.raises(rngvault.StoreError, match="corrupt"):
        store.get("alice/exp", "s1")
    assert _put(store, "alice/exp", "s2", _snapshot(2)) is True
    assert store.get("alice/exp", "s2") == rngvault.encode(_snapshot(2))
    assert store.get("alice/exp", "s1") == rngvault.encode(_snapshot(1))


def test_a_tampered_record_cannot_make_the_store_read_outside_it(tmp_path: Path) -> None:
    """A record whose state digest is a path ("../secret"), with a matching checksum, is a
    StoreError naming the file: the file outside the store is never read into a snapshot."""
    root = tmp_path / "store"
    store = LocalStore(root)
    _put(store, "alice/exp", "s1", _snapshot(1))
    secret = tmp_path / "secret"
    secret.write_bytes(b"\xa6secret")  # root/blobs/../../secret
    path = _record_path(root, "s1")
    record = msgpack.unpackb(path.read_bytes())
    prefix, entries, suffix = msgpack.unpackb(record["skeleton"])
    entries[0][1] = "../secret"
    record["skeleton"] = msgpack.packb([prefix, entries, suffix])
    blob = (root / "blobs" / entries[1][1][:2] / entries[1][1]).read_bytes()
    forged = prefix + entries[0][0] + secret.read_bytes() + entries[1][0] + blob + suffix
    record["sha256"] = hashlib.sha256(forged).hexdigest()
    path.write_bytes(msgpack.packb(record))
    with pytest.raises(rngvault.StoreError, match=f"{re.escape(str(path))}.*'../secret'"):
        store.get("alice/exp", "s1")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2, 3], "not a map"),
        ("a string", "not a map"),
        ({"sha256": "x", "size": 1, "skeleton": b"", "info": {}}, None),
        ({"sha256": 1, "size": 1, "skeleton": b"", "info": {}}, "'sha256' is 1"),
        ({"sha256": "x", "size": 1, "skeleton": "text", "info": {}}, "'skeleton' is 'text'"),
        ({"sha256": "x", "size": 1, "skeleton": b"\xc1", "info": {}}, None),
        ({"sha256": "x", "size": 1, "skeleton": msgpack.packb([1]), "info": {}}, None),
        ({"sha256": "x", "size": 1, "skeleton": b"", "info": []}, "'info' is []"),
    ],
)
def test_a_record_of_the_wrong_shape_is_a_store_error_naming_the_file(
    record: object, message: str | None, tmp_path: Path
) -> None:
    """Not a map, a missing or mistyped field, a skeleton that is not one: get and
    snapshots raise StoreError naming the file, never TypeError or KeyError."""
    store = LocalStore(tmp_path)
    _put(store, "alice/exp", "s1", _snapshot(1))
    path = _record_path(tmp_path, "s1")
    path.write_bytes(msgpack.packb(record))
    where = re.escape(str(path))
    with pytest.raises(
        rngvault.StoreError, match=where + (".*" + re.escape(message) if message else "")
    ):
        store.get("alice/exp", "s1")
    with pytest.raises((rngvault.StoreError, rngvault.InvalidNameError), match=where):
        store.snapshots("alice/exp")


def test_the_listing_takes_names_from_where_the_files_are(tmp_path: Path) -> None:
    """A record whose info claims another name ("../../x") is listed under its folder's
    name; a field of the wrong type is a StoreError naming the file."""
    store = LocalStore(tmp_path)
    _put(store, "alice/exp", "s1", _snapshot(1))
    path = _record_path(tmp_path, "s1")
    record = msgpack.unpackb(path.read_bytes())
    record["info"]["name"] = "../../x"
    path.write_bytes(msgpack.packb(record))
    assert [i.name for i in store.snapshots("alice/exp")] == ["s1"]
    record["info"]["size"] = "big"
    path.write_bytes(msgpack.packb(record))
    with pytest.raises(rngvault.StoreError, match=f"{re.escape(str(path))}.*'size'"):
        store.snapshots("alice/exp")


def test_a_skeleton_naming_more_than_its_size_is_refused_before_it_is_assembled(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    snap = _snapshot(1)
    _put(store, "alice/exp", "s1", snap)
    path = tmp_path / "runs/alice/exp/s1/rank-0.snap"
    record = msgpack.unpackb(path.read_bytes(), raw=False)
    prefix, entries, suffix = msgpack.unpackb(record["skeleton"], raw=False)
    record["skeleton"] = msgpack.packb([prefix, entries * 100_000, suffix])
    path.write_bytes(msgpack.packb(record))
    with pytest.raises(rngvault.StoreError, match="names more than"):
        store.get("alice/exp", "s1")
