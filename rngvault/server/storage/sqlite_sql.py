"""The SQL of the SQLite backend: one function per operation, each given a connection.

Write functions run inside the writer's transaction (see writer.py); read functions inside a
reader's read transaction, so every query of one function sees the same database state.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rngvault._errors import NotFoundError, StoreError
from rngvault._snapshot import Snapshot
from rngvault.server.storage.base import (
    STEP_KEY_MAX,
    RunInfo,
    SnapshotInfo,
    SnapshotKey,
    StepRow,
    Stored,
    info_needed,
    state_positions,
    step_key,
    step_rows,
)
from rngvault.server.storage.blobs import BLOB_MIN, S3Blobs
from rngvault.server.storage.content import (
    Prepared,
    cacheable,
    checked,
    columns,
    dictionary,
    outcome,
    packs,
    snapshot_info,
    snapshot_label,
    unpack,
    unpack_info,
    window,
)
from rngvault.server.storage.deltas import Bases, Chains, rebuild, whole, whole_base

Fetch = Callable[[Sequence[bytes]], Mapping[bytes, bytes]]
"""Objects of the blob store by digest, fetched (and checked) together; None: no blob store."""
Upload = Callable[[Sequence[tuple[bytes, bytes]]], None]
"""Writes (digest, state) objects to the blob store, returning once all are stored."""

# An entry's states digest: stored as its 32 bytes (rows stored before: as hex text).
_HEX_DIGEST = re.compile("[0-9a-f]{64}")


# A state row's key: the first SHORT_KEY bytes of its SHA-256 (``sha256`` the whole), or
# the whole SHA-256 (no ``sha256``); _SHA256 is SQL for its SHA-256 (``{}``: the table).
SHORT_KEY = 8
_SHA256 = "coalesce({0}.sha256, {0}.hash)"


def _digest(column: str) -> str:
    """SQL for the hex text of a stored digest ``column``."""
    return f"CASE typeof({column}) WHEN 'blob' THEN lower(hex({column})) ELSE {column} END"


def _run_id(conn: sqlite3.Connection, namespace: str, run: str) -> int:
    row = conn.execute(
        "SELECT id FROM runs WHERE namespace = ? AND name = ?", (namespace, run)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no run {namespace}/{run}")
    return int(row[0])


def _snapshot_id(conn: sqlite3.Connection, run_id: int, key: SnapshotKey) -> int:
    row = conn.execute(
        "SELECT id FROM snapshots WHERE run_id = ? AND name = ?", (run_id, key.name)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no snapshot {key.name!r} in run {key.namespace}/{key.run}")
    return int(row[0])


class Ids:
    """Row ids the writer already knows: runs by (namespace, name), states by hash; runs'
    dictionaries by run id; and the delta encoders of each run, rank and generator, whose
    bases are state rows.

    It saves a lookup per run and per state on every put. Only the write connection's jobs
    use it; anything that can remove rows or undo inserts clears it: a delete, a rollback,
    and a commit by another connection (the writer watches SQLite's ``data_version``).
    """

    MAX = 100_000

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], int] = {}
        self.states: dict[bytes, int] = {}
        self.dictionaries: dict[int, bytes] = {}
        self.chains = Chains()

    def clear(self) -> None:
        self.runs.clear()
        self.states.clear()
        self.dictionaries.clear()
        self.chains.clear()

    def remember(self, table: dict[Any, int], key: Any, row_id: int) -> None:
        if len(table) >= self.MAX:
            table.clear()
        table[key] = row_id


def _insert_or_get(
    conn: sqlite3.Connection,
    insert: str,
    values: tuple[Any, ...],
    select: str,
    key: tuple[Any, ...],
) -> tuple[int, bool]:
    """The id of the row ``insert`` adds (``... ON CONFLICT DO NOTHING RETURNING id``), or of
    the row already there; and whether it was added."""
    added = conn.execute(insert, values).fetchall()
    if added:
        return int(added[0][0]), True
    return int(conn.execute(select, key).fetchone()[0]), False


def put(
    conn: sqlite3.Connection,
    key: SnapshotKey,
    prepared: Prepared,
    ids: Ids,
    room: Callable[[int], None] = lambda size: None,
    *,
    snapshot: Snapshot | None = None,
    step: int | None = None,
    upload: Upload | None = None,
) -> Stored:
    """Store one rank; ``room(size)`` raises StoreFullError when new data may not be added
    (an identical retry is answered before it is asked); ``step`` is the snapshot's
    metadata.step, which the steps listing indexes. Given the ``snapshot``, a new state is
    stored as a delta from its generator's base where one fits (``deltas``). A taken key:
    see ``outcome``.

    Given ``upload``, a new whole state row of at least ``BLOB_MIN`` bytes keeps its state
    in the blob store (``external`` 1, ``data`` empty): its object is written here, before
    the transaction commits, so no committed row refers to a missing object (a failed upload
    is a BlobError, and the job rolls back). Blocks on the upload: run it in the writer's
    thread."""
    now = time.time()
    run_id = ids.runs.get((key.namespace, key.run))
    if run_id is None:
        run_id, _ = _insert_or_get(
            conn,
            "INSERT INTO runs (namespace, name, created, updated) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (key.namespace, key.run, now, now),
            "SELECT id FROM runs WHERE namespace = ? AND name = ?",
            (key.namespace, key.run),
        )
        ids.remember(ids.runs, (key.namespace, key.run), run_id)
    snapshot_id, new_name = _insert_or_get(
        conn,
        "INSERT INTO snapshots (run_id, name, stored) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (run_id, key.name, now),
        "SELECT id FROM snapshots WHERE run_id = ? AND name = ?",
        (run_id, key.name),
    )
    if not new_name:
        same = conn.execute(
            f"SELECT body_sha256, {_digest('digest')} FROM entries"
            " WHERE snapshot_id = ? AND rank = ?",
            (snapshot_id, key.rank),
        ).fetchone()
        if same is not None:
            return outcome(key, prepared, same[0], same[1])
    room(prepared.size)
    run_dictionary = ids.dictionaries.get(run_id)
    if run_dictionary is None and packs(prepared):
        conn.execute(
            "INSERT INTO dictionaries (run_id, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (run_id, dictionary(prepared)),
        )
        run_dictionary = window(
            conn.execute("SELECT data FROM dictionaries WHERE run_id = ?", (run_id,)).fetchone()[0]
        )
        ids.dictionaries[run_id] = run_dictionary
        if not cacheable(ids.dictionaries, ids.MAX):
            ids.dictionaries.clear()
    body_sha256, envelope, info = columns(prepared, run_dictionary)
    entry_id = conn.execute(
        "INSERT INTO entries (snapshot_id, rank, body_sha256, digest, size, envelope, info,"
        " run_id, step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            snapshot_id,
            key.rank,
            body_sha256,
            bytes.fromhex(prepared.digest)
            if _HEX_DIGEST.fullmatch(prepared.digest)
            else prepared.digest,
            prepared.size,
            envelope,
            info,
            run_id,
            step_key(step),
        ),
    ).lastrowid
    state_ids = {}
    where = (run_id, key.rank)
    new = []  # (row, its first 8 bytes are another state's key, external)
    for digest, data in prepared.blobs.items():
        state_id = ids.states.get(digest)
        if state_id is None:
            found = {
                bytes(full): row_id
                for row_id, full in conn.execute(
                    f"SELECT id, {_SHA256.format('states')} FROM states WHERE hash IN (?, ?)",
                    (digest[:SHORT_KEY], digest),
                )
            }
            state_id = found.get(digest)
            if state_id is None:
                row = ids.chains.encode(
                    where, prepared.generators.get(digest), data, digest, snapshot
                )
                outside = upload is not None and row.base is None and len(row.data) >= BLOB_MIN
                new.append((row, bool(found), outside))
                continue
            ids.remember(ids.states, digest, state_id)
        state_ids[digest] = state_id
    if upload is not None and any(outside for *_, outside in new):
        # the objects hold the states themselves, keyed by their digests
        upload([(row.hash, prepared.blobs[row.hash]) for row, _, outside in new if outside])
    for row, taken, outside in new:
        kept, how = (b"", None) if outside else (row.data, row.how)
        state_id = conn.execute(
            "INSERT INTO states (hash, sha256, data, base, how, external)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (row.hash, None, kept, row.base, how, 1 if outside else None)
            if taken
            else (row.hash[:SHORT_KEY], row.hash, kept, row.base, how, 1 if outside else None),
        ).fetchone()[0]
        ids.chains.rebase(where, row, state_id, snapshot)
        ids.remember(ids.states, row.hash, state_id)
        state_ids[row.hash] = state_id
    conn.executemany(
        "INSERT INTO entry_states (entry_id, position, at, state_id) VALUES (?, ?, ?, ?)",
        [(entry_id, i, at, state_ids[h]) for i, (at, h) in enumerate(prepared.holes)],
    )
    conn.execute(
        "UPDATE runs SET snapshots = snapshots + ?, updated = ? WHERE id = ?",
        (int(new_name), now, run_id),
    )
    return Stored(created=True, digest=prepared.digest, size=prepared.size)


def stored_ranks(conn: sqlite3.Connection, key: SnapshotKey) -> tuple[int, ...]:
    """The ranks stored under ``key``'s snapshot name (its rank is not looked at)."""
    snapshot_id = _snapshot_id(conn, _run_id(conn, key.namespace, key.run), key)
    return tuple(
        r[0]
        for r in conn.execute(
            "SELECT rank FROM entries WHERE snapshot_id = ? ORDER BY rank", (snapshot_id,)
        )
    )


def get(
    conn: sqlite3.Connection, key: SnapshotKey, bases: Bases, fetch: Fetch | None = None
) -> bytes:
    """One rank's snapshot, byte for byte as stored; states kept in the blob store come
    from ``fetch`` (all of them in one call)."""
    row = conn.execute(
        f"SELECT e.id, e.envelope, e.info, d.data, {_digest('e.digest')}, e.size,"
        " e.body_sha256 FROM runs r"
        " JOIN snapshots s ON s.run_id = r.id"
        " JOIN entries e ON e.snapshot_id = s.id"
        " LEFT JOIN dictionaries d ON d.run_id = r.id"
        " WHERE r.namespace = ? AND r.name = ? AND s.name = ? AND e.rank = ?",
        (key.namespace, key.run, key.name, key.rank),
    ).fetchone()
    if row is None:
        ranks = stored_ranks(conn, key)
        raise NotFoundError(
            f"snapshot {key.name!r} of {key.namespace}/{key.run} has no rank {key.rank} "
            f"(ranks stored: {', '.join(map(str, ranks))})"
        )
    states = conn.execute(
        f"SELECT es.at, {_SHA256.format('st')}, st.data, st.how, st.base,"
        f" {_SHA256.format('b')}, st.external, b.external FROM entry_states es"
        " JOIN states st ON st.id = es.state_id LEFT JOIN states b ON b.id = st.base"
        " WHERE es.entry_id = ? ORDER BY es.position",
        (row[0],),
    ).fetchall()
    try:
        # the snapshot's objects, and those of bases not cached, fetched together
        outside = [bytes(s[1]) for s in states if s[6] and s[4] is None]
        outside += [bytes(s[5]) for s in states if s[7] and bases.get(bytes(s[5])) is None]
        objects = _fetched(fetch, outside) if outside else {}
        holes = []
        for at, digest, data, how, base_id, base_hash, external, _ in states:
            if base_id is None:
                data = whole(digest, objects[bytes(digest)] if external else data, how)
            else:
                base = _base(conn, digest, base_id, base_hash, bases, fetch, objects)
                data = rebuild(digest, data, how, base)
            holes.append((at, data))
        envelope = unpack(row[1], row[2], row[3], row[4])[0]
    except StoreError as exc:
        raise StoreError(f"{snapshot_label(key)}: {exc}") from None
    return checked(key, envelope, holes, row[5], bytes(row[6]))


def _fetched(fetch: Fetch | None, digests: Sequence[bytes]) -> Mapping[bytes, bytes]:
    """The states kept in the blob store, by digest (StoreError without a blob store)."""
    if fetch is None:
        raise StoreError(
            f"state {digests[0].hex()} is kept in a blob store, and none is configured "
            "(start the server with --blobs s3://BUCKET/PREFIX)"
        )
    return fetch(digests)


def _base(
    conn: sqlite3.Connection,
    digest: bytes,
    base_id: int,
    base_hash: bytes | None,
    bases: Bases,
    fetch: Fetch | None = None,
    fetched: Mapping[bytes, bytes] | None = None,
) -> bytes:
    """The whole base state of the delta ``digest``, from ``bases``, the database or the
    blob store (``fetched``: objects already there)."""
    if base_hash is None:
        raise StoreError(f"state {digest.hex()} is a delta whose base state is missing")
    base_hash = bytes(base_hash)
    found = bases.get(base_hash)
    if found is None:
        data, base_of_base, how, external = conn.execute(
            "SELECT data, base, how, external FROM states WHERE id = ?", (base_id,)
        ).fetchone()
        if external and base_of_base is None:
            if fetched is None or base_hash not in fetched:
                fetched = _fetched(fetch, [base_hash])
            data = fetched[base_hash]
        found = whole_base(base_hash, data, base_of_base, how)
        bases.put(base_hash, found)
    return found


def matching(patterns: tuple[str, ...]) -> str:
    """A condition: ``namespace`` matches one of ``patterns`` (false for none)."""
    return f"({' OR '.join(['namespace GLOB ?'] * len(patterns))})" if patterns else "0"


def list_runs(
    conn: sqlite3.Connection,
    namespace: str | None,
    patterns: tuple[str, ...],
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[RunInfo]:
    where, args = [matching(patterns)], list(patterns)
    if namespace is not None:
        where.append("namespace = ?")
        args.append(namespace)
    if after is not None:
        where.append("(namespace, name) > (?, ?)")
        args.extend(after)
    rows = conn.execute(
        "SELECT namespace, name, created, updated, snapshots FROM runs"
        f" WHERE {' AND '.join(where)} ORDER BY namespace, name LIMIT ?",
        (*args, limit + 1),
    )
    return [RunInfo(*row) for row in rows]


def run_info(conn: sqlite3.Connection, namespace: str, run: str) -> tuple[RunInfo, str]:
    """The run as listed and its record (``"{}"`` without one); NotFoundError without it."""
    row = conn.execute(
        "SELECT namespace, name, created, updated, snapshots, record FROM runs"
        " WHERE namespace = ? AND name = ?",
        (namespace, run),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no run {namespace}/{run}")
    return RunInfo(*row[:5]), row[5] or "{}"


def put_record(
    conn: sqlite3.Connection,
    namespace: str,
    run: str,
    record: str,
    room: Callable[[int], None] = lambda size: None,
) -> tuple[bool, str]:
    """Keep ``record`` as the run's unless it has one (creating the run); returns (stored
    now, the stored record). ``room`` as for ``put``."""
    stored = conn.execute(
        "SELECT record FROM runs WHERE namespace = ? AND name = ?", (namespace, run)
    ).fetchone()
    if stored is not None and stored[0] is not None:
        return False, str(stored[0])
    room(len(record))
    if stored is None:
        now = time.time()
        conn.execute(
            "INSERT INTO runs (namespace, name, created, updated, record) VALUES (?, ?, ?, ?, ?)",
            (namespace, run, now, now, record),
        )
    else:
        conn.execute(
            "UPDATE runs SET record = ? WHERE namespace = ? AND name = ?", (record, namespace, run)
        )
    return True, record


def list_snapshots(
    conn: sqlite3.Connection, namespace: str, run: str, after: int, limit: int
) -> list[tuple[int, SnapshotInfo]]:
    run_id = _run_id(conn, namespace, run)
    snapshots = conn.execute(
        "SELECT id, name, stored FROM snapshots WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
        (run_id, after, limit + 1),
    ).fetchall()
    if not snapshots:
        return []
    entries: dict[int, list[tuple[Any, ...]]] = {}
    ids = [row[0] for row in snapshots]
    run_dictionary = _dictionary(conn, run_id)
    for row in conn.execute(
        f"SELECT snapshot_id, rank, {_digest('digest')}, size, info, envelope FROM entries"
        f" WHERE snapshot_id IN ({', '.join('?' * len(ids))}) ORDER BY snapshot_id, rank",
        ids,
    ):
        entries.setdefault(row[0], []).append(row[1:])
    result = []
    for snapshot_id, name, stored in snapshots:
        ranks = entries[snapshot_id]
        rank, digest, size, info, envelope = ranks[0]
        try:
            info = unpack_info(envelope, info, run_dictionary, digest)
        except StoreError as exc:
            raise StoreError(
                f"{snapshot_label(SnapshotKey(namespace, run, name, rank))}: {exc}"
            ) from None
        result.append(
            (snapshot_id, snapshot_info(name, stored, [r[0] for r in ranks], digest, size, info))
        )
    return result


def _dictionary(conn: sqlite3.Connection, run_id: int) -> bytes | None:
    row = conn.execute("SELECT data FROM dictionaries WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else bytes(row[0])


def steps(
    conn: sqlite3.Connection,
    namespace: str,
    run: str,
    rank: int,
    start: int | None,
    generator: str | None,
    after: tuple[int, int] | None,
    limit: int,
) -> list[tuple[int, int, StepRow]]:
    """Up to ``limit + 1`` (step key, snapshot id, row) of ``Store.steps``, read from the
    covering index on (run_id, rank, step, snapshot_id, digest) and the snapshots' names;
    an entry's metadata is read only for a generator's position or a step past int64."""
    run_id = _run_id(conn, namespace, run)
    where, args = "e.run_id = ? AND e.rank = ? AND e.step IS NOT NULL", [run_id, rank]
    if after is not None:
        where += " AND (e.step, e.snapshot_id) > (?, ?)"
        args.extend(after)
    elif start is not None:
        where += " AND e.step >= ?"
        args.append(min(start, STEP_KEY_MAX))
    rows = conn.execute(
        f"SELECT e.step, e.snapshot_id, e.id, s.name, {_digest('e.digest')} FROM entries e"
        f" JOIN snapshots s ON s.id = e.snapshot_id WHERE {where}"
        " ORDER BY e.step, e.snapshot_id LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    infos: dict[int, str] = {}
    if needed := info_needed(rows, generator):
        run_dictionary = _dictionary(conn, run_id)
        for entry_id, envelope, info, digest, name in conn.execute(
            f"SELECT e.id, e.envelope, e.info, {_digest('e.digest')}, s.name FROM json_each(?) w"
            " JOIN entries e ON e.id = w.value JOIN snapshots s ON s.id = e.snapshot_id",
            (json.dumps(needed),),
        ):
            try:
                infos[entry_id] = unpack_info(envelope, info, run_dictionary, digest)
            except StoreError as exc:
                key = SnapshotKey(namespace, run, name, rank)
                raise StoreError(f"{snapshot_label(key)}: {exc}") from None
    hashes: dict[int, str] = {}
    if generator is not None and rows:
        hashes = {
            entry_id: digest.hex()
            for entry_id, digest in conn.execute(
                f"SELECT es.entry_id, {_SHA256.format('st')} FROM json_each(?) w"
                " JOIN entry_states es ON es.entry_id = json_extract(w.value, '$[0]')"
                " AND es.position = json_extract(w.value, '$[1]')"
                " JOIN states st ON st.id = es.state_id",
                (json.dumps(state_positions(rows, infos, generator)),),
            )
        }
    return step_rows(rows, infos, hashes)


@dataclass(frozen=True, slots=True)
class Doomed:
    """Snapshots of one run to delete: ``after < id <= upto``, stored before ``before``.

    Ids only grow, so snapshots stored once a delete began are never in its range.
    """

    run_id: int
    after: int
    upto: int
    before: float | None = None


@dataclass(frozen=True, slots=True)
class Removed:
    """What delete jobs removed: snapshot names, rank entries, state blobs."""

    snapshots: int = 0
    ranks: int = 0
    blobs: int = 0

    def __add__(self, other: Removed) -> Removed:
        return Removed(
            self.snapshots + other.snapshots, self.ranks + other.ranks, self.blobs + other.blobs
        )


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def delete_batch(
    conn: sqlite3.Connection, doomed: Doomed, ids: Ids, limit: int
) -> tuple[Removed, Doomed | None]:
    """Delete up to ``limit`` snapshots and ``limit`` rank entries of ``doomed``, the state
    blobs nothing refers to any more, and the run once it is empty. Returns what it removed
    and what is left to do (None when done). A snapshot whose ranks do not all fit is
    finished by the next batch; until then it lists with fewer ranks."""
    ids.clear()
    where = "run_id = ? AND id > ? AND id <= ?"
    args: list[Any] = [doomed.run_id, doomed.after, doomed.upto]
    if doomed.before is not None:
        where += " AND stored < ?"
        args.append(doomed.before)
    chosen = [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM snapshots WHERE {where} ORDER BY id LIMIT ?", (*args, limit)
        )
    ]
    if not chosen:
        conn.execute(
            "DELETE FROM dictionaries WHERE run_id = ?1 AND EXISTS"
            " (SELECT 1 FROM runs WHERE id = ?1 AND snapshots <= 0)",
            (doomed.run_id,),
        )
        conn.execute("DELETE FROM runs WHERE id = ? AND snapshots <= 0", (doomed.run_id,))
        return Removed(), None
    entries = [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM entries WHERE snapshot_id IN ({_marks(chosen)})"
            " ORDER BY snapshot_id, rank LIMIT ?",
            (*chosen, limit),
        )
    ]
    blobs = ranks = 0
    if entries:
        used = conn.execute(
            "SELECT id, base FROM states WHERE id IN (SELECT state_id FROM entry_states"
            f" WHERE entry_id IN ({_marks(entries)}))",
            entries,
        ).fetchall()
        conn.execute(f"DELETE FROM entry_states WHERE entry_id IN ({_marks(entries)})", entries)
        # Deltas first, then whole states (their bases among them) no delta is based on.
        deltas = [(i,) for i, base in used if base is not None]
        wholes = {i for i, base in used if base is None} | {base for _i, base in used if base}
        blobs = conn.executemany(
            "DELETE FROM states WHERE id = ?1 AND NOT EXISTS"
            " (SELECT 1 FROM entry_states WHERE state_id = ?1)",
            deltas,
        ).rowcount
        blobs += conn.executemany(
            "DELETE FROM states WHERE id = ?1 AND NOT EXISTS"
            " (SELECT 1 FROM entry_states WHERE state_id = ?1)"
            " AND NOT EXISTS (SELECT 1 FROM states WHERE base = ?1)",
            [(i,) for i in sorted(wholes)],
        ).rowcount
        ranks = conn.execute(
            f"DELETE FROM entries WHERE id IN ({_marks(entries)})", entries
        ).rowcount
    done = conn.execute(
        f"DELETE FROM snapshots WHERE id IN ({_marks(chosen)}) AND NOT EXISTS"
        " (SELECT 1 FROM entries WHERE snapshot_id = snapshots.id)",
        chosen,
    ).rowcount
    conn.execute("UPDATE runs SET snapshots = snapshots - ? WHERE id = ?", (done, doomed.run_id))
    left = conn.execute(
        f"SELECT min(id) FROM snapshots WHERE id IN ({_marks(chosen)})", chosen
    ).fetchone()[0]
    after = chosen[-1] if left is None else left - 1
    return Removed(done, ranks, blobs), dataclasses.replace(doomed, after=after)


def doomed_snapshot(conn: sqlite3.Connection, namespace: str, run: str, name: str) -> Doomed:
    """The one snapshot ``delete_snapshot`` removes (NotFoundError if there is none)."""
    run_id = _run_id(conn, namespace, run)
    snapshot_id = _snapshot_id(conn, run_id, SnapshotKey(namespace, run, name))
    return Doomed(run_id, snapshot_id - 1, snapshot_id)


def doomed_run(conn: sqlite3.Connection, namespace: str, run: str) -> Doomed:
    """Every snapshot the run holds now (NotFoundError if there is no such run)."""
    run_id = _run_id(conn, namespace, run)
    upto = conn.execute("SELECT max(id) FROM snapshots WHERE run_id = ?", (run_id,)).fetchone()
    return Doomed(run_id, 0, upto[0] or 0)


def touch_run(conn: sqlite3.Connection, run_id: int) -> None:
    conn.execute("UPDATE runs SET updated = ? WHERE id = ?", (time.time(), run_id))


@dataclass(frozen=True, slots=True)
class Plan:
    """What a retention pass selects: per run, the range to delete; counts; a sample."""

    runs: int
    doomed: tuple[Doomed, ...]
    snapshots: int
    ranks: int
    sample: tuple[tuple[str, str, str], ...]


def plan_collect(
    conn: sqlite3.Connection,
    pattern: str,
    namespaces: tuple[str, ...],
    keep_last: int | None,
    before: float | None,
    sample: int,
) -> Plan:
    """Select what ``Store.collect`` deletes, in one read transaction."""
    runs = conn.execute(
        "SELECT id, namespace, name FROM runs WHERE namespace || '/' || name GLOB ?"
        f" AND {matching(namespaces)} ORDER BY namespace, name",
        (pattern, *namespaces),
    ).fetchall()
    doomed, found = [], []
    snapshots = ranks = 0
    for run_id, namespace, name in runs:
        if keep_last:
            cut = conn.execute(
                "SELECT id FROM snapshots WHERE run_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                (run_id, keep_last - 1),
            ).fetchone()
            if cut is None:
                continue
            upto = cut[0] - 1
        else:
            upto = conn.execute(
                "SELECT coalesce(max(id), 0) FROM snapshots WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
        where, args = "s.run_id = ? AND s.id <= ?", [run_id, upto]
        if before is not None:
            where += " AND s.stored < ?"
            args.append(before)
        count = conn.execute(f"SELECT count(*) FROM snapshots s WHERE {where}", args).fetchone()
        if not count[0]:
            continue
        snapshots += count[0]
        ranks += conn.execute(
            f"SELECT count(*) FROM snapshots s JOIN entries e ON e.snapshot_id = s.id"
            f" WHERE {where}",
            args,
        ).fetchone()[0]
        doomed.append(Doomed(run_id, 0, upto, before))
        found += [
            (stored, snapshot_id, (namespace, name, snapshot))
            for snapshot_id, snapshot, stored in conn.execute(
                f"SELECT s.id, s.name, s.stored FROM snapshots s WHERE {where}"
                " ORDER BY s.id LIMIT ?",
                (*args, sample),
            )
        ]
    found.sort(key=lambda f: (f[0], f[1]))
    return Plan(len(runs), tuple(doomed), snapshots, ranks, tuple(f[2] for f in found[:sample]))


def sweep_batch(conn: sqlite3.Connection, blobs: S3Blobs, digests: Sequence[bytes]) -> int:
    """Delete the objects among ``digests`` that no state row refers to; returns how many.

    A writer job: puts upload inside their own jobs, so none can be between its upload and
    its commit while this checks and deletes. Blocks on the store: the writer's thread."""
    keys = [d[:SHORT_KEY] for d in digests] + list(digests)
    referenced = {
        bytes(r[0])
        for r in conn.execute(
            f"SELECT {_SHA256.format('states')} FROM states"
            f" WHERE hash IN ({_marks(keys)}) AND external = 1",
            keys,
        )
    }
    doomed = [d for d in digests if d not in referenced]
    blobs.delete(doomed)
    return len(doomed)


def count_snapshots(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(snapshots), 0) FROM runs").fetchone()[0])
