"""The local store's packs: snapshots with a step appended to one file per run and rank,
their states kept as deltas, read back byte for byte by any process."""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault import LocalStore, Metadata
from rngvault.stores import _pack

torch = pytest.importorskip("torch", reason="torch is not installed")

pytestmark = pytest.mark.skipif(not _pack.AVAILABLE, reason="packs need fcntl (POSIX)")


class Loop:
    """A small loop's generators (every family a training loop has) and its draws."""

    def __init__(self, seed: int = 0) -> None:
        self.py = random.Random(seed)
        self.legacy = np.random.RandomState(seed)
        self.torch = torch.Generator().manual_seed(seed)
        self.augment = np.random.default_rng(seed)
        self.mt = np.random.Generator(np.random.MT19937(seed))
        data = torch.utils.data.TensorDataset(torch.arange(64.0))
        self.loader = torch.utils.data.DataLoader(
            data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed)
        )
        self.batches: Any = iter(self.loader)

    def targets(self) -> dict[str, Any]:
        return {
            "py": self.py,
            "legacy": self.legacy,
            "torch": self.torch,
            "augment": self.augment,
            "mt": self.mt,
            "loader": self.loader,
        }

    def step(self, i: int) -> None:
        try:
            next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
        torch.rand(3000, generator=self.torch)
        self.augment.normal(size=50)
        if i % 3 == 0:
            self.py.random(), self.legacy.random_sample(900), self.mt.random(700)
        if i % 5 == 0:
            self.legacy.standard_normal()  # leaves a cached normal


def _run(store: LocalStore, steps: int, run: str = "alice/exp", rank: int = 0) -> list[bytes]:
    """Snapshots of ``Loop`` at every step, put into ``store``; their bytes."""
    loop = Loop()
    rngvault.families.dataloader.watch(loop.loader)
    datas = []
    for i in range(steps):
        loop.step(i)
        meta = Metadata(step=i, rank=rank, world_size=rank + 1)
        snap = rngvault.capture(loop.targets(), include_globals=False, metadata=meta)
        data = rngvault.encode(snap)
        assert store.put(run, f"step-{i}", data, snap, durable=False) is True
        datas.append(data)
    store.flush()
    return datas


def test_every_step_comes_back_byte_for_byte_in_this_and_a_fresh_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    datas = _run(store, 120)
    pack = tmp_path / "runs/alice/exp/.steps/rank-0.pack"
    assert pack.is_file()
    assert not (tmp_path / "runs/alice/exp/step-0").exists()  # no file per snapshot
    for i, data in enumerate(datas):
        assert store.get("alice/exp", f"step-{i}") == data
    fresh = LocalStore(tmp_path)  # reads the pack from scratch, newest first
    for i in reversed(range(len(datas))):
        assert fresh.get("alice/exp", f"step-{i}") == datas[i]
    store.close()


def test_states_are_kept_as_deltas_a_few_hundred_bytes_a_step(tmp_path: Path) -> None:
    """The pack grows by far less than a snapshot per step: the MT19937 keys (python,
    NumPy legacy and MT19937, torch) and the other states are deltas."""
    store = LocalStore(tmp_path)
    datas = _run(store, 300)
    pack = tmp_path / "runs/alice/exp/.steps/rank-0.pack"
    first = sum(len(d) for d in datas[:1])
    later = (pack.stat().st_size - first) / (len(datas) - 1)
    assert len(datas[-1]) > 15_000  # what each snapshot encodes to
    assert later < 1_000, f"{later:.0f} bytes a step"
    store.close()


def test_a_pack_and_files_hold_each_name_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    gen = {"a": np.random.default_rng(1)}
    stepped = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=3))
    named = rngvault.capture(gen, include_globals=False)
    assert store.put("alice/exp", "x", rngvault.encode(stepped), stepped) is True
    assert store.put("alice/exp", "x", rngvault.encode(stepped), stepped) is False
    with pytest.raises(rngvault.ConflictError, match="alice/exp/x"):
        store.put("alice/exp", "x", rngvault.encode(named), named)  # a file would hold it
    assert store.put("alice/exp", "y", rngvault.encode(named), named) is True
    gen["a"].random()
    moved = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=4))
    with pytest.raises(rngvault.ConflictError, match="alice/exp/y"):
        store.put("alice/exp", "y", rngvault.encode(moved), moved)  # the pack would hold it
    results = store.put_many(
        [
            ("alice/exp", "z", rngvault.encode(moved), moved),
            ("alice/exp", "x", rngvault.encode(moved), moved),
            ("alice/exp", "z", rngvault.encode(moved), moved),
        ]
    )
    assert results[0] is True and results[2] is False
    assert isinstance(results[1], rngvault.ConflictError)
    names = {info.name: info.step for info in store.snapshots("alice/exp")}
    assert names == {"x": 3, "y": None, "z": 4}
    assert [(e.step, e.name) for e in store.steps("alice/exp")] == [(3, "x"), (4, "z")]


def test_ranks_have_their_own_packs_and_list_together(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for rank in (0, 1):
        _run(store, 5, rank=rank)
    [info] = [i for i in store.snapshots("alice/exp") if i.name == "step-2"]
    assert info.ranks == (0, 1) and info.step == 2
    with pytest.raises(rngvault.NotFoundError, match="no rank 2 .*stored ranks: 0, 1"):
        store.get("alice/exp", "step-2", 2)
    assert [e.name for e in store.steps("alice/exp", rank=1, start=3)] == ["step-3", "step-4"]


def test_a_record_cut_short_by_a_crash_is_cut_off_by_the_next_append(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    datas = _run(store, 10)
    store.close()
    pack = tmp_path / "runs/alice/exp/.steps/rank-0.pack"
    whole = pack.read_bytes()
    pack.write_bytes(whole[:-7])  # the last record lost its end
    fresh = LocalStore(tmp_path)
    assert fresh.get("alice/exp", "step-8") == datas[8]
    with pytest.raises(rngvault.NotFoundError):
        fresh.get("alice/exp", "step-9")
    kept = fresh._pack_of("alice/exp", 0).records["step-8"]
    end = kept.offset + 8 + kept.length  # where the record cut short began
    snap = rngvault.decode(datas[9])
    assert fresh.put("alice/exp", "step-9", datas[9], snap) is True
    reader = LocalStore(tmp_path)
    assert [reader.get("alice/exp", f"step-{i}") for i in range(10)] == datas
    assert pack.read_bytes()[:end] == whole[:end]


def _offsets(pack: Path) -> list[int]:
    """Where each record of a pack starts."""
    raw, offset, found = pack.read_bytes(), len(_pack.MAGIC), []
    while offset < len(raw):
        found.append(offset)
        offset += 8 + _pack._HEAD.unpack_from(raw, offset)[0]
    return found


def test_a_damaged_record_is_reported_and_nothing_is_appended_after_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    datas = _run(store, 10)
    store.close()
    pack = tmp_path / "runs/alice/exp/.steps/rank-0.pack"
    raw = bytearray(pack.read_bytes())
    raw[_offsets(pack)[5] + 20] ^= 0xFF  # inside record 5 of 10: its CRC no longer matches
    pack.write_bytes(bytes(raw))
    fresh = LocalStore(tmp_path)
    assert fresh.get("alice/exp", "step-3") == datas[3]
    with pytest.raises(rngvault.StoreError, match=r"rank-0\.pack.*damaged.*may be past it"):
        fresh.get("alice/exp", "step-7")
    with pytest.raises(rngvault.StoreError, match="damaged"):
        list(fresh.steps("alice/exp"))  # a bisect must not compare fewer steps unawares
    snap = rngvault.decode(datas[9])
    with pytest.raises(rngvault.StoreError, match=r"rank-0\.pack.*damaged"):
        fresh.put("alice/exp", "step-10", datas[9], snap)
    assert pack.read_bytes() == bytes(raw)  # nothing was cut or appended


@pytest.mark.parametrize("tail", ["bad last record", "zeros", "header and zeros"])
def test_what_a_power_cut_leaves_at_the_end_is_cut_off(tmp_path: Path, tail: str) -> None:
    """The file's new size without its data: the last record garbled, or zeros."""
    store = LocalStore(tmp_path)
    datas = _run(store, 8)
    store.close()
    pack = tmp_path / "runs/alice/exp/.steps/rank-0.pack"
    raw = bytearray(pack.read_bytes())
    if tail == "bad last record":
        raw[-30] ^= 0xFF
        kept = 7
    elif tail == "zeros":
        raw += bytes(5000)
        kept = 8
    else:
        last = _offsets(pack)[-1]
        raw[last + 8 :] = bytes(len(raw) - last - 8)
        kept = 7
    pack.write_bytes(bytes(raw))
    fresh = LocalStore(tmp_path)
    assert [fresh.get("alice/exp", f"step-{i}") for i in range(kept)] == datas[:kept]
    snap = rngvault.decode(datas[-1])
    assert fresh.put("alice/exp", "again", datas[-1], snap) in (True, False)
    reader = LocalStore(tmp_path)
    assert reader.get("alice/exp", "again") == datas[-1]
    assert [reader.get("alice/exp", f"step-{i}") for i in range(kept)] == datas[:kept]


@pytest.mark.parametrize("junk", [b"", b"RVPACK1\n" + bytes(range(256)) * 4, b"not a pack"])
def test_a_file_that_is_not_a_pack_is_a_store_error_never_a_crash(
    tmp_path: Path, junk: bytes
) -> None:
    pack = tmp_path / "runs/alice/exp/.steps/rank-0.pack"
    pack.parent.mkdir(parents=True)
    pack.write_bytes(junk)
    store = LocalStore(tmp_path)
    readable = junk.startswith(_pack.MAGIC) or not junk
    with pytest.raises(rngvault.NotFoundError if readable else rngvault.StoreError):
        store.get("alice/exp", "step-0")
    if readable:
        assert list(store.steps("alice/exp")) == []
    else:
        with pytest.raises(rngvault.StoreError, match="not a snapshot pack"):
            list(store.steps("alice/exp"))
    gen = {"a": np.random.default_rng(1)}
    snap = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=0))
    if readable:
        # after the magic nothing is a record: a torn tail, cut off (an empty file, a
        # crash right after creating it, becomes a pack)
        assert store.put("alice/exp", "step-0", rngvault.encode(snap), snap) is True
        assert LocalStore(tmp_path).get("alice/exp", "step-0") == rngvault.encode(snap)
    else:
        with pytest.raises(rngvault.StoreError, match="rank-0.pack"):
            store.put("alice/exp", "step-0", rngvault.encode(snap), snap)


def _append_in_child(root: str, worker: int) -> None:
    store = LocalStore(root)
    gen = {"a": np.random.default_rng(worker)}
    for i in range(40):
        gen["a"].random()
        snap = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=i))
        store.put("alice/exp", f"w{worker}-{i}", rngvault.encode(snap), snap, durable=False)
    store.close()


def test_processes_appending_to_one_pack_take_turns(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_in_child, args=(str(tmp_path), w)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    store = LocalStore(tmp_path)
    assert len(store.snapshots("alice/exp")) == 120
    for w in range(3):
        gen = {"a": np.random.default_rng(w)}
        gen["a"].random()
        gen["a"].random()
        data = store.get("alice/exp", f"w{w}-1")
        assert (
            rngvault.decode(data).states["a"]
            == rngvault.capture(gen, include_globals=False).states["a"]
        )


def test_a_fresh_process_restores_a_packed_step(tmp_path: Path) -> None:
    """The pack is read back by another process, whose restore continues the stream."""
    store = LocalStore(tmp_path)
    _run(store, 30)
    store.close()
    loop = Loop()
    rngvault.families.dataloader.watch(loop.loader)
    for i in range(21):
        loop.step(i)
    expected = [
        torch.rand(1, generator=loop.torch).item(),
        float(loop.augment.random()),
        loop.py.random(),
    ]
    code = f"""
import random, numpy as np, torch, rngvault
store = rngvault.LocalStore({str(tmp_path)!r})
snap = rngvault.decode(store.get("alice/exp", "step-20"))
t = torch.Generator(); a = np.random.default_rng(); p = random.Random()
rngvault.restore(snap, {{"torch": t, "augment": a, "py": p}}, include_globals=False)
print([torch.rand(1, generator=t).item(), float(a.random()), p.random()])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == str(expected)


def test_durable_puts_sync_at_once_and_others_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    fsync = _pack.os.fsync
    monkeypatch.setattr(_pack.os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    monkeypatch.setattr(_pack, "SYNC_INTERVAL", 3600.0)
    store = LocalStore(tmp_path)
    gen = {"a": np.random.default_rng(1)}

    def put(i: int, durable: bool) -> None:
        gen["a"].random()
        snap = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=i))
        store.put("alice/exp", f"s{i}", rngvault.encode(snap), snap, durable=durable)

    put(0, durable=False)
    synced.clear()  # creating the pack syncs its directory
    put(1, durable=False)
    put(2, durable=False)
    assert synced == []
    put(3, durable=True)
    assert len(synced) == 1
    put(4, durable=False)
    store.flush()
    assert len(synced) == 2
    monkeypatch.setattr(_pack, "SYNC_INTERVAL", 0.0)
    put(5, durable=False)
    assert len(synced) == 3
    store.close()


def _rewrite_last(pack: Path, change: Any) -> None:
    """Replace the pack's last record by ``change(payload)``, stored as a valid record
    (compressed against the first, with a matching CRC): hostile content, not damage."""
    import msgpack

    from rngvault import _delta

    raw = pack.read_bytes()
    offset, records = len(_pack.MAGIC), []
    while offset < len(raw):
        length, _crc = _pack._HEAD.unpack_from(raw, offset)
        records.append((offset, raw[offset + 8 : offset + 8 + length]))
        offset += 8 + length
    first = _delta.decompress(records[0][1], b"", _pack.MAX_RECORD)
    last_offset, stored = records[-1]
    payload = msgpack.unpackb(_delta.decompress(stored, first, _pack.MAX_RECORD), raw=False)
    new = _delta.compress(msgpack.packb(change(payload), use_bin_type=True), first)
    pack.write_bytes(raw[:last_offset] + _pack._HEAD.pack(len(new), zlib.crc32(new)) + new)


def _loop_to_itself(payload: dict[str, Any]) -> dict[str, Any]:
    for item in payload["b"]:
        item[1], item[3] = item[0], "p"  # a delta based on itself
    return payload


def _far_base(payload: dict[str, Any]) -> dict[str, Any]:
    for item in payload["b"]:
        if item[2] is not None:
            item[2][3] = 1 << 40  # more outputs than a base may be behind
    return payload


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (_loop_to_itself, "StoreError"),
        (_far_base, "StoreError"),
        (lambda p: {**p, "k": b"\xc1 not a skeleton"}, "StoreError"),
        (lambda p: {**p, "g": "not a map"}, "StoreError"),
        (lambda p: {**p, "k": [b"\x81\xa7created", p["k"][1], p["k"][2]]}, "StoreError"),
        (lambda p: {**p, "b": [[b"x", None, None, "w", b""]]}, "StoreError"),
        (lambda p: {**p, "s": p["s"] + 1}, "StoreError"),
        (lambda p: {**p, "k": [p["k"][0], p["k"][1], p["k"][2] + b"!"]}, "StoreError"),
    ],
)
def test_hostile_records_are_store_errors_never_wrong_bytes(
    tmp_path: Path, change: Any, found: str
) -> None:
    store = LocalStore(tmp_path)
    datas = _run(store, 6)
    store.close()
    _rewrite_last(tmp_path / "runs/alice/exp/.steps/rank-0.pack", change)
    fresh = LocalStore(tmp_path)
    with pytest.raises(getattr(rngvault, found)):
        fresh.get("alice/exp", "step-5")
    assert fresh.get("alice/exp", "step-4") == datas[4]


def test_a_forked_child_and_its_parent_append_in_turn(tmp_path: Path) -> None:
    """The pack's descriptor and flock opened before a fork are not shared after it."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    store = LocalStore(tmp_path)
    gen = {"a": np.random.default_rng(1)}

    def put(name: str, i: int) -> bytes:
        gen["a"].random()
        snap = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=i))
        data = rngvault.encode(snap)
        store.put("alice/exp", name, data, snap, durable=False)
        return data

    put("before", 0)  # opens the pack in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own names, then its bytes to the parent
        os.close(read)
        try:
            datas = [put(f"child-{i}", i) for i in range(60)]
            store.flush()
            os.write(write, b"".join(len(d).to_bytes(4, "big") + d for d in datas))
        finally:
            os._exit(0)
    os.close(write)
    mine = [put(f"parent-{i}", i) for i in range(60)]
    store.flush()
    received = b""
    while chunk := os.read(read, 1 << 16):
        received += chunk
    os.waitpid(pid, 0)
    theirs, offset = [], 0
    while offset < len(received):
        size = int.from_bytes(received[offset : offset + 4], "big")
        theirs.append(received[offset + 4 : offset + 4 + size])
        offset += 4 + size
    assert len(theirs) == 60
    fresh = LocalStore(tmp_path)
    assert [fresh.get("alice/exp", f"parent-{i}") for i in range(60)] == mine
    assert [fresh.get("alice/exp", f"child-{i}") for i in range(60)] == theirs


def test_one_bad_item_of_a_batch_fails_alone(tmp_path: Path) -> None:
    """A snapshot whose bytes cannot be split fails; the batch's others are stored, and
    later snapshots read back (no index entry points at a record never written)."""
    store = LocalStore(tmp_path)
    gen = {"a": np.random.default_rng(1), "b": np.random.RandomState(2)}
    items = []
    for i in range(3):
        gen["a"].random()
        gen["b"].random_sample(5)
        snap = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=i))
        data = rngvault.encode(snap)
        items.append(("alice/exp", f"s{i}", data if i != 1 else b"\x80", snap))
    results = store.put_many(items)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], rngvault.RngVaultError)
    later = []
    for i in range(3, 6):
        gen["a"].random()
        snap = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=i))
        later.append(rngvault.encode(snap))
        assert store.put("alice/exp", f"s{i}", later[-1], snap) is True
    fresh = LocalStore(tmp_path)
    assert [fresh.get("alice/exp", f"s{i}") for i in (0, 2)] == [items[0][2], items[2][2]]
    assert [fresh.get("alice/exp", f"s{i}") for i in range(3, 6)] == later


def test_an_unsynced_append_is_synced_within_the_interval_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pack, "SYNC_INTERVAL", 0.2)
    store = LocalStore(tmp_path)
    gen = {"a": np.random.default_rng(1)}
    snap = rngvault.capture(gen, include_globals=False, metadata=Metadata(step=0))
    store.put("alice/exp", "s0", rngvault.encode(snap), snap, durable=False)
    pack = store._pack_of("alice/exp", 0)
    deadline = time.monotonic() + 10
    while pack._unsynced and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pack._unsynced  # nothing else was appended, flushed or closed
    store.close()


def test_a_record_that_would_rebuild_more_than_its_size_stops_early(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _run(store, 3)
    store.close()

    def many_entries(payload: dict[str, Any]) -> dict[str, Any]:
        prefix, entries, suffix = payload["k"]
        return {**payload, "k": [prefix, entries * 20_000, suffix]}

    _rewrite_last(tmp_path / "runs/alice/exp/.steps/rank-0.pack", many_entries)
    with pytest.raises(rngvault.StoreError, match="corrupt"):
        LocalStore(tmp_path).get("alice/exp", "step-2")
