"""The SQL of the SQLite backend: one function per operation, each given a connection.

Write functions run inside the writer's transaction (see writer.py); read functions inside a
reader's read transaction, so every query of one function sees the same database state.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from rngvault._errors import ConflictError, NotFoundError
from rngvault.server.storage.base import RunInfo, SnapshotInfo, SnapshotKey, Stored
from rngvault.server.storage.content import Prepared, join, snapshot_info


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
    """Row ids the writer already knows: runs by (namespace, name), states by hash.

    It saves a lookup per run and per state on every put. Only the write connection's jobs
    use it; anything that can remove rows or undo inserts clears it: a delete, a rollback,
    and a commit by another connection (the writer watches SQLite's ``data_version``).
    """

    MAX = 100_000

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], int] = {}
        self.states: dict[bytes, int] = {}

    def clear(self) -> None:
        self.runs.clear()
        self.states.clear()

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


def put(conn: sqlite3.Connection, key: SnapshotKey, prepared: Prepared, ids: Ids) -> Stored:
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
            "SELECT body_sha256 FROM entries WHERE snapshot_id = ? AND rank = ?",
            (snapshot_id, key.rank),
        ).fetchone()
        if same is not None:
            if same[0] == prepared.body_sha256:
                return Stored(created=False, digest=prepared.digest, size=prepared.size)
            raise ConflictError(
                f"snapshot {key.name!r} rank {key.rank} of {key.namespace}/{key.run} is "
                "already stored with other content; snapshots are immutable: use a new name"
            )
    entry_id = conn.execute(
        "INSERT INTO entries (snapshot_id, rank, body_sha256, digest, size, envelope, info)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            snapshot_id,
            key.rank,
            prepared.body_sha256,
            prepared.digest,
            prepared.size,
            prepared.envelope,
            prepared.info,
        ),
    ).lastrowid
    state_ids = {}
    for digest, data in prepared.blobs.items():
        state_id = ids.states.get(digest)
        if state_id is None:
            state_id, _ = _insert_or_get(
                conn,
                "INSERT INTO states (hash, data) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (digest, data),
                "SELECT id FROM states WHERE hash = ?",
                (digest,),
            )
            ids.remember(ids.states, digest, state_id)
        state_ids[digest] = state_id
    conn.executemany(
        "INSERT INTO entry_states (entry_id, position, at, state_id) VALUES (?, ?, ?, ?)",
        [(entry_id, i, at, state_ids[h]) for i, (at, h) in enumerate(prepared.holes)],
    )
    conn.execute(
        "UPDATE runs SET snapshots = snapshots + ?, updated = ? WHERE id = ?",
        (int(new_name), now, run_id),
    )
    return Stored(created=True, digest=prepared.digest, size=prepared.size)


def get(conn: sqlite3.Connection, key: SnapshotKey) -> bytes:
    row = conn.execute(
        "SELECT e.id, e.envelope FROM runs r"
        " JOIN snapshots s ON s.run_id = r.id"
        " JOIN entries e ON e.snapshot_id = s.id"
        " WHERE r.namespace = ? AND r.name = ? AND s.name = ? AND e.rank = ?",
        (key.namespace, key.run, key.name, key.rank),
    ).fetchone()
    if row is None:
        snapshot_id = _snapshot_id(conn, _run_id(conn, key.namespace, key.run), key)
        ranks = [
            r[0]
            for r in conn.execute(
                "SELECT rank FROM entries WHERE snapshot_id = ? ORDER BY rank", (snapshot_id,)
            )
        ]
        raise NotFoundError(
            f"snapshot {key.name!r} of {key.namespace}/{key.run} has no rank {key.rank} "
            f"(ranks stored: {', '.join(map(str, ranks))})"
        )
    holes = conn.execute(
        "SELECT es.at, st.data FROM entry_states es JOIN states st ON st.id = es.state_id"
        " WHERE es.entry_id = ? ORDER BY es.position",
        (row[0],),
    ).fetchall()
    return join(row[1], holes)


def list_runs(
    conn: sqlite3.Connection,
    namespace: str | None,
    pattern: str,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[RunInfo]:
    where, args = ["namespace GLOB ?"], [pattern]
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
    for row in conn.execute(
        "SELECT snapshot_id, rank, digest, size, info FROM entries"
        f" WHERE snapshot_id IN ({', '.join('?' * len(ids))}) ORDER BY snapshot_id, rank",
        ids,
    ):
        entries.setdefault(row[0], []).append(row[1:])
    result = []
    for snapshot_id, name, stored in snapshots:
        ranks = entries[snapshot_id]
        _rank, digest, size, info = ranks[0]
        result.append(
            (snapshot_id, snapshot_info(name, stored, [r[0] for r in ranks], digest, size, info))
        )
    return result


def _delete_entries(conn: sqlite3.Connection, snapshot_ids: list[int]) -> int:
    """Delete the snapshots' entries, then every state blob no entry refers to any more."""
    removed = 0
    for snapshot_id in snapshot_ids:
        entry_ids = [
            r[0]
            for r in conn.execute("SELECT id FROM entries WHERE snapshot_id = ?", (snapshot_id,))
        ]
        for entry_id in entry_ids:
            state_ids = {
                r[0]
                for r in conn.execute(
                    "SELECT state_id FROM entry_states WHERE entry_id = ?", (entry_id,)
                )
            }
            conn.execute("DELETE FROM entry_states WHERE entry_id = ?", (entry_id,))
            conn.executemany(
                "DELETE FROM states WHERE id = ?1 AND NOT EXISTS"
                " (SELECT 1 FROM entry_states WHERE state_id = ?1)",
                [(s,) for s in state_ids],
            )
        removed += conn.execute(
            "DELETE FROM entries WHERE snapshot_id = ?", (snapshot_id,)
        ).rowcount
        conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
    return removed


def delete_snapshot(conn: sqlite3.Connection, namespace: str, run: str, name: str, ids: Ids) -> int:
    ids.clear()
    run_id = _run_id(conn, namespace, run)
    snapshot_id = _snapshot_id(conn, run_id, SnapshotKey(namespace, run, name))
    removed = _delete_entries(conn, [snapshot_id])
    conn.execute(
        "UPDATE runs SET snapshots = snapshots - 1, updated = ? WHERE id = ?",
        (time.time(), run_id),
    )
    conn.execute("DELETE FROM runs WHERE id = ? AND snapshots = 0", (run_id,))
    return removed


def delete_run(conn: sqlite3.Connection, namespace: str, run: str, ids: Ids) -> int:
    ids.clear()
    run_id = _run_id(conn, namespace, run)
    snapshot_ids = [
        r[0] for r in conn.execute("SELECT id FROM snapshots WHERE run_id = ?", (run_id,))
    ]
    _delete_entries(conn, snapshot_ids)
    conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
    return len(snapshot_ids)


def count_snapshots(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(snapshots), 0) FROM runs").fetchone()[0])
