"""The SQL of the PostgreSQL backend: one coroutine per operation, each given a connection.

Connections are in autocommit mode; write functions run inside the transaction the store
opens around them (READ COMMITTED), read functions are single statements (one consistent
view each). Concurrency rests on the database's constraints, not on checks made first:

- immutable names: the unique keys (run_id, name) and (snapshot_id, rank) with
  ``ON CONFLICT DO NOTHING``. Of two puts racing on one name, the second waits for the
  first to commit, then runs again and finds its entry: the same snapshot (not created) or
  a ``ConflictError``.
- listing order: a put locks its run's row only for its last statement, which takes the
  run's next position and counts the snapshot, and holds it through the commit; so a run's
  positions follow commit order and a cursor never skips a snapshot stored while paging.
- shared state blobs: a delete locks the blobs it may remove (in hash order) before
  checking that nothing refers to them; a put that used a blob removed meanwhile fails its
  foreign key and the store retries it (``RETRY``).
- deletes of many snapshots (a run, a retention pass) go in batches of ``BATCH``, each its
  own transaction that locks the run's row first, and take only positions up to the run's
  last one when the delete began: a put committed meanwhile stays, with its run.
- states in a blob store (``external``): a put that stores one takes the advisory lock
  ``BLOB_LOCK`` shared, uploads the objects no row has yet, and inserts their rows, all in its
  transaction; a sweep deletes objects no row refers to under the same lock taken exclusively,
  so it never deletes an object that a put in flight has uploaded or relied on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from rngvault._errors import NotFoundError, StoreError
from rngvault.server.storage import migrations
from rngvault.server.storage.base import (
    SAMPLE,
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
from rngvault.server.storage.content import (
    Prepared,
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
from rngvault.server.storage.deltas import Row, rebuild, whole

Conn = AsyncConnection[Any]

# pg_advisory_xact_lock key for migrations: the bytes of "rngvault" as an int64.
MIGRATION_LOCK = int.from_bytes(b"rngvault", "big")
# pg_advisory_xact_lock key between puts of external states (shared) and sweeps (exclusive).
BLOB_LOCK = int.from_bytes(b"rngblobs", "big")


class Unchanged(Exception):
    """A concurrent put stored this key first: roll back, answer with ``outcome``'s result."""

    def __init__(self, stored: Stored) -> None:
        super().__init__("unchanged")
        self.stored = stored


class Retry(Exception):
    """A concurrent transaction changed what this one relied on (a delete removed a row, a
    put stored the same name first): roll back and run it again."""


async def _one(
    conn: Conn, query: str, args: tuple[Any, ...] = (), *, binary: bool = False
) -> tuple[Any, ...] | None:
    cursor = await conn.execute(query, args, binary=binary)
    return await cursor.fetchone()


async def migrate(conn: Conn) -> None:
    """Apply the pending migrations in one transaction, one server at a time."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(migrations.SCHEMA_TABLE)
        row = await _one(conn, "SELECT coalesce(max(version), 0) FROM schema_version")
        current = int(row[0]) if row else 0
        for step in migrations.pending(current, migrations.load("postgresql")):
            for statement in step.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied) VALUES (%s, %s, %s)",
                (step.version, step.name, time.time()),
            )


async def put(
    conn: Conn,
    key: SnapshotKey,
    prepared: Prepared,
    rows: Sequence[Row] = (),
    *,
    step: int | None = None,
    dictionaries: MutableMapping[int, bytes] | None = None,
    external: Collection[bytes] = (),
) -> tuple[Stored, set[bytes]]:
    """Store one rank's snapshot, its new states as ``rows`` (whole or deltas, in hash
    order; by default every state whole); ``step`` is its metadata.step, which the steps
    listing indexes. The entry is packed against its run's dictionary: the one in
    ``dictionaries`` (run id -> dictionary: those known), else the stored one, else this
    entry's, which it stores and adds to ``dictionaries``. The whole rows whose hashes are in
    ``external`` are stored empty, their state in the blob store (``hold_blobs`` first).
    Returns the answer and the hashes
    of the state rows it inserted. The store runs this in pipeline mode: statements whose
    results are not read yet travel together, so a put costs three round trips (four for a
    run's dictionary not known yet). A taken key: see ``outcome``."""
    found_query = await conn.execute(
        "SELECT r.id, s.id, e.body_sha256, e.digest FROM runs r"
        " LEFT JOIN snapshots s ON s.run_id = r.id AND s.name = %s"
        " LEFT JOIN entries e ON e.snapshot_id = s.id AND e.rank = %s"
        " WHERE r.namespace = %s AND r.name = %s",
        (key.name, key.rank, key.namespace, key.run),
    )
    if not rows:
        rows = [Row(h, prepared.blobs[h]) for h in sorted(prepared.blobs)]
    inserted_query = None
    if rows:  # sent before the answer above: a retry finds them all there already
        # In hash order, one order for every writer: no lock cycles.
        inserted_query = await conn.execute(
            # A delta whose base is gone or not whole is left out: its entry then fails
            # its foreign key, and the store retries the put with whole states.
            "INSERT INTO states (hash, data, base, how, external) SELECT u.* FROM"
            " unnest(%b::bytea[], %b::bytea[], %b::bytea[], %s::text[], %s::int[])"
            " AS u(h, d, b, w, x)"
            " WHERE u.b IS NULL OR EXISTS"
            "  (SELECT 1 FROM states s WHERE s.hash = u.b AND s.base IS NULL)"
            " ON CONFLICT (hash) DO NOTHING RETURNING hash",
            (
                [r.hash for r in rows],
                [b"" if r.hash in external else r.data for r in rows],
                [r.base for r in rows],
                [None if r.hash in external else r.how for r in rows],
                [1 if r.hash in external else None for r in rows],
            ),
            binary=True,
        )
    found = await found_query.fetchone()
    if found is not None and found[2] is not None:
        # a retry: nothing new was written
        return outcome(key, prepared, found[2], found[3]), set()
    now = time.time()
    run_id = found[0] if found else await _create_run(conn, key, now)
    if dictionaries is None:
        dictionaries = {}
    run_dictionary = dictionaries.get(run_id)
    if run_dictionary is None and packs(prepared):
        run_dictionary = window(await _dictionary(conn, run_id, dictionary(prepared)))
        dictionaries[run_id] = run_dictionary
    body_sha256, envelope, info = columns(prepared, run_dictionary)
    entry_values = (
        key.rank,
        body_sha256,
        prepared.digest,
        prepared.size,
        envelope,
        info,
        run_id,
        step_key(step),
    )
    existing = found[1] if found else None
    if existing is None:
        entry = await _one(
            conn,
            "WITH s AS (INSERT INTO snapshots (run_id, name, stored) VALUES (%s, %s, %s)"
            "  ON CONFLICT (run_id, name) DO NOTHING RETURNING id)"
            " INSERT INTO entries (snapshot_id, rank, body_sha256, digest, size, envelope, info,"
            "  run_id, step)"
            " SELECT id, %s, %b, %s, %s, %b, %s, %s, %s FROM s RETURNING id, snapshot_id",
            (run_id, key.name, now, *entry_values),
        )
        if entry is None:  # a concurrent put stored this name first and has committed
            raise Retry
    else:
        entry = await _one(
            conn,
            "INSERT INTO entries (snapshot_id, rank, body_sha256, digest, size, envelope, info,"
            " run_id, step) VALUES (%s, %s, %b, %s, %s, %b, %s, %s, %s)"
            " ON CONFLICT (snapshot_id, rank) DO NOTHING"
            " RETURNING id, snapshot_id",
            (existing, *entry_values),
        )
        if entry is None:  # a concurrent put stored this rank first
            row = await _one(
                conn,
                "SELECT body_sha256, digest FROM entries WHERE snapshot_id = %s AND rank = %s",
                (existing, key.rank),
            )
            if row is None:
                raise Retry
            raise Unchanged(outcome(key, prepared, row[0], row[1]))
    entry_id, snapshot_id = entry
    if prepared.holes:
        await conn.execute(
            "INSERT INTO entry_states (entry_id, position, at, state_hash)"
            " SELECT %s, u.* FROM unnest(%s::int[], %s::int[], %b::bytea[]) AS u(p, a, h)"
            " ORDER BY u.h",
            (
                entry_id,
                list(range(len(prepared.holes))),
                [at for at, _h in prepared.holes],
                [h for _at, h in prepared.holes],
            ),
        )
    # Last, and sent with the commit: the run's row stays locked only until the commit.
    if existing is None:
        await conn.execute(
            "WITH r AS (UPDATE runs SET snapshots = snapshots + 1, positions = positions + 1,"
            " updated = %s WHERE id = %s RETURNING positions)"
            " UPDATE snapshots SET position = (SELECT positions FROM r) WHERE id = %s",
            (now, run_id, snapshot_id),
        )
    else:
        await conn.execute("UPDATE runs SET updated = %s WHERE id = %s", (now, run_id))
    inserted = {bytes(r[0]) for r in await inserted_query.fetchall()} if inserted_query else set()
    return Stored(created=True, digest=prepared.digest, size=prepared.size), inserted


async def hold_blobs(conn: Conn, hashes: Sequence[bytes]) -> set[bytes]:
    """Take ``BLOB_LOCK`` shared for the transaction (no sweep deletes an object until it
    ends) and return those of ``hashes`` that have an external row: their objects stay until
    then. The others' objects are the put's to upload (a row kept in the database may be
    deleted meanwhile, and the put's row inserted external in its place)."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (BLOB_LOCK,))
    cursor = await conn.execute(
        "SELECT hash FROM states WHERE hash = ANY(%b::bytea[]) AND external = 1",
        (list(hashes),),
        binary=True,
    )
    return {bytes(r[0]) for r in await cursor.fetchall()}


async def sweep_batch(
    conn: Conn, digests: Sequence[bytes], delete: Callable[[list[bytes]], Awaitable[None]]
) -> int:
    """Delete (``delete``) the objects among ``digests`` that no state row refers to, under
    ``BLOB_LOCK`` taken exclusively: puts in flight commit first, later ones wait for the
    transaction's end. Returns how many were deleted."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (BLOB_LOCK,))
    cursor = await conn.execute(
        "SELECT hash FROM states WHERE hash = ANY(%b::bytea[]) AND external = 1",
        (list(digests),),
        binary=True,
    )
    # an object whose state's row holds its bytes (stored before --blobs, or moved back to
    # the database) is not needed: a put that makes a row external uploads under the lock
    used = {bytes(r[0]) for r in await cursor.fetchall()}
    unused = [d for d in digests if d not in used]
    await delete(unused)
    return len(unused)


async def _dictionary(conn: Conn, run_id: int, mine: bytes) -> bytes:
    """The run's dictionary: the stored one, else ``mine``, stored. Of two puts storing one
    at once, the second waits for the first to commit, then reads its dictionary."""
    row = await _one(
        conn,
        "INSERT INTO dictionaries (run_id, data) VALUES (%s, %b)"
        " ON CONFLICT (run_id) DO NOTHING RETURNING data",
        (run_id, mine),
        binary=True,
    )
    if row is None:  # a new statement sees the one committed meanwhile
        row = await _one(
            conn, "SELECT data FROM dictionaries WHERE run_id = %s", (run_id,), binary=True
        )
        if row is None:
            raise Retry
    return bytes(row[0])


async def _drop_empty_run(conn: Conn, run_id: int) -> None:
    """Delete the run (and its dictionary) if it holds no snapshot any more."""
    await conn.execute(
        "DELETE FROM dictionaries WHERE run_id = %s"
        " AND EXISTS (SELECT 1 FROM runs WHERE id = %s AND snapshots = 0)",
        (run_id, run_id),
    )
    await conn.execute("DELETE FROM runs WHERE id = %s AND snapshots = 0", (run_id,))


async def _create_run(conn: Conn, key: SnapshotKey, now: float) -> int:
    row = await _one(
        conn,
        "INSERT INTO runs (namespace, name, created, updated) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (namespace, name) DO NOTHING RETURNING id",
        (key.namespace, key.run, now, now),
    )
    if row is None:  # created concurrently; a new statement sees it once committed
        row = await _one(
            conn,
            "SELECT id FROM runs WHERE namespace = %s AND name = %s",
            (key.namespace, key.run),
        )
        if row is None:
            raise Retry
    return int(row[0])


async def _run_id(conn: Conn, namespace: str, run: str, *, lock: bool = False) -> int:
    row = await _one(
        conn,
        "SELECT id FROM runs WHERE namespace = %s AND name = %s" + (" FOR UPDATE" if lock else ""),
        (namespace, run),
    )
    if row is None:
        raise NotFoundError(f"no run {namespace}/{run}")
    return int(row[0])


async def _snapshot_id(conn: Conn, run_id: int, key: SnapshotKey) -> int:
    row = await _one(
        conn, "SELECT id FROM snapshots WHERE run_id = %s AND name = %s", (run_id, key.name)
    )
    if row is None:
        raise NotFoundError(f"no snapshot {key.name!r} in run {key.namespace}/{key.run}")
    return int(row[0])


async def stored_ranks(conn: Conn, key: SnapshotKey) -> tuple[int, ...]:
    """The ranks stored under ``key``'s snapshot name (its rank is not looked at)."""
    snapshot_id = await _snapshot_id(conn, await _run_id(conn, key.namespace, key.run), key)
    cursor = await conn.execute(
        "SELECT rank FROM entries WHERE snapshot_id = %s ORDER BY rank", (snapshot_id,)
    )
    return tuple(r[0] for r in await cursor.fetchall())


async def fetch(conn: Conn, key: SnapshotKey) -> tuple[Any, ...]:
    """What ``assemble`` makes the stored body of ``key`` from: its entry and state rows
    (external ones' bytes still to fetch: ``external_states``, ``with_states``)."""
    row = await _one(
        conn,
        "SELECT e.envelope, e.info, d.data, e.digest, e.size, e.body_sha256, h.ats, h.datas,"
        " h.hows, h.hashes, h.bases, h.wholes, h.base_hows, h.base_hashes, h.externals,"
        " h.base_externals FROM runs r"
        " JOIN snapshots s ON s.run_id = r.id"
        " JOIN entries e ON e.snapshot_id = s.id"
        " LEFT JOIN dictionaries d ON d.run_id = r.id"
        " CROSS JOIN LATERAL (SELECT array_agg(es.at ORDER BY es.position) AS ats,"
        "   array_agg(st.data ORDER BY es.position) AS datas,"
        "   array_agg(st.how ORDER BY es.position) AS hows,"
        "   array_agg(st.hash ORDER BY es.position) AS hashes,"
        "   array_agg(b.data ORDER BY es.position) AS bases,"
        "   array_agg(b.base IS NULL ORDER BY es.position) AS wholes,"
        "   array_agg(b.how ORDER BY es.position) AS base_hows,"
        "   array_agg(st.base ORDER BY es.position) AS base_hashes,"
        "   array_agg(st.external ORDER BY es.position) AS externals,"
        "   array_agg(b.external ORDER BY es.position) AS base_externals"
        "   FROM entry_states es JOIN states st ON st.hash = es.state_hash"
        "   LEFT JOIN states b ON b.hash = st.base"
        "   WHERE es.entry_id = e.id) h"
        " WHERE r.namespace = %s AND r.name = %s AND s.name = %s AND e.rank = %s",
        (key.namespace, key.run, key.name, key.rank),
        binary=True,  # bytes as they are stored, not as hex text
    )
    if row is None:
        ranks = await stored_ranks(conn, key)
        raise NotFoundError(
            f"snapshot {key.name!r} of {key.namespace}/{key.run} has no rank {key.rank} "
            f"(ranks stored: {', '.join(map(str, ranks))})"
        )
    return tuple(row)


def external_states(row: tuple[Any, ...]) -> tuple[list[bytes], list[bytes]]:
    """The hashes of a ``fetch``ed row's states kept in the blob store: (states, bases)."""
    hashes, base_hashes, externals, base_externals = row[9], row[13], row[14], row[15]
    states: list[bytes] = []
    bases: list[bytes] = []
    for digest, external, base, base_external in zip(
        hashes or (), externals or (), base_hashes or (), base_externals or (), strict=True
    ):
        if external == 1:
            states.append(bytes(digest))
        if base is not None and base_external == 1:
            bases.append(bytes(base))
    return states, bases


def with_states(row: tuple[Any, ...], found: Mapping[bytes, bytes]) -> tuple[Any, ...]:
    """A ``fetch``ed row with its external states' (and bases') bytes from ``found``."""
    if not any(x == 1 for x in (*(row[14] or ()), *(row[15] or ()))):
        return row
    datas = [
        found[bytes(h)] if x == 1 else d for d, h, x in zip(row[7], row[9], row[14], strict=True)
    ]
    bases = [
        found[bytes(h)] if x == 1 else d for d, h, x in zip(row[10], row[13], row[15], strict=True)
    ]
    return (*row[:7], datas, row[8], row[9], bases, *row[11:])


def assemble(key: SnapshotKey, row: tuple[Any, ...]) -> bytes:
    """The body of ``key`` from its ``fetch``ed rows: states rebuilt, the entry unpacked,
    all checked (StoreError naming the snapshot). CPU work: callers run it in a thread."""
    try:
        return _assemble(key, row)
    except StoreError as exc:
        raise StoreError(f"{snapshot_label(key)}: {exc}") from None


def _assemble(key: SnapshotKey, row: tuple[Any, ...]) -> bytes:
    envelope, info, run_dictionary, states_digest, size, body_sha256 = row[:6]
    ats, datas, hows, hashes, bases, wholes, base_hows, base_hashes = row[6:14]
    holes = []
    for at, data, how, digest, base, base_whole, base_how, base_hash in zip(
        ats or (),
        datas or (),
        hows or (),
        hashes or (),
        bases or (),
        wholes or (),
        base_hows or (),
        base_hashes or (),
        strict=True,
    ):
        state = bytes(data)
        if base_hash is None:
            state = whole(bytes(digest), state, how)
        else:
            if base is None:
                raise StoreError(f"state {bytes(digest).hex()} is a delta whose base is missing")
            if not base_whole:
                raise StoreError(f"the base of state {bytes(digest).hex()} is not whole")
            base_state = whole(bytes(base_hash), bytes(base), base_how)
            state = rebuild(bytes(digest), state, how, base_state)
        holes.append((at, state))
    unpacked = unpack(bytes(envelope), info, _bytes(run_dictionary), states_digest)[0]
    return checked(key, unpacked, holes, size, bytes(body_sha256))


def like_pattern(glob: str) -> str:
    """A LIKE pattern for a namespace glob of ``*`` and ``?`` (everything else literal)."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


async def list_runs(
    conn: Conn,
    namespace: str | None,
    patterns: tuple[str, ...],
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[RunInfo]:
    where: list[str] = ["namespace LIKE ANY (%s::text[])"]
    args: list[Any] = [[like_pattern(p) for p in patterns]]
    if namespace is not None:
        where.append("namespace = %s")
        args.append(namespace)
    if after is not None:
        where.append("(namespace, name) > (%s, %s)")
        args.extend(after)
    cursor = await conn.execute(
        "SELECT namespace, name, created, updated, snapshots FROM runs"
        f" WHERE {' AND '.join(where)} ORDER BY namespace, name LIMIT %s",
        (*args, limit + 1),
    )
    return [RunInfo(*row) for row in await cursor.fetchall()]


async def run_info(conn: Conn, namespace: str, run: str) -> tuple[RunInfo, str]:
    """The run as listed and its record (``"{}"`` without one); NotFoundError without it."""
    row = await _one(
        conn,
        "SELECT namespace, name, created, updated, snapshots, record FROM runs"
        " WHERE namespace = %s AND name = %s",
        (namespace, run),
    )
    if row is None:
        raise NotFoundError(f"no run {namespace}/{run}")
    return RunInfo(*row[:5]), row[5] or "{}"


async def put_record(conn: Conn, namespace: str, run: str, record: str) -> tuple[bool, str]:
    """Keep ``record`` as the run's unless it has one (creating the run); returns (stored
    now, the stored record). Of two racing, the second waits for the first's row lock, then
    finds its record."""
    now = time.time()
    await conn.execute(
        "INSERT INTO runs (namespace, name, created, updated) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (namespace, name) DO NOTHING",
        (namespace, run, now, now),
    )
    if await _one(
        conn,
        "UPDATE runs SET record = %s WHERE namespace = %s AND name = %s AND record IS NULL"
        " RETURNING id",
        (record, namespace, run),
    ):
        return True, record
    row = await _one(
        conn, "SELECT record FROM runs WHERE namespace = %s AND name = %s", (namespace, run)
    )
    if row is None or row[0] is None:  # deleted meanwhile
        raise Retry
    return False, str(row[0])


async def drop_empty_run(conn: Conn, namespace: str, run: str) -> None:
    """Delete the run if it holds no snapshot (one that only has a record)."""
    row = await _one(
        conn,
        "SELECT id FROM runs WHERE namespace = %s AND name = %s FOR UPDATE",
        (namespace, run),
    )
    if row is not None:
        await _drop_empty_run(conn, int(row[0]))


async def list_snapshots(
    conn: Conn, namespace: str, run: str, after: int, limit: int
) -> list[tuple[int, SnapshotInfo]]:
    cursor = await conn.execute(
        "SELECT s.position, s.name, s.stored, k.ranks, f.digest, f.size, f.info, f.envelope,"
        " d.data FROM runs r JOIN snapshots s ON s.run_id = r.id"
        " LEFT JOIN dictionaries d ON d.run_id = r.id"
        " CROSS JOIN LATERAL (SELECT array_agg(rank ORDER BY rank) AS ranks"
        "   FROM entries WHERE snapshot_id = s.id) k"
        " CROSS JOIN LATERAL (SELECT digest, size, info, envelope FROM entries"
        "   WHERE snapshot_id = s.id ORDER BY rank LIMIT 1) f"
        " WHERE r.namespace = %s AND r.name = %s AND s.position > %s"
        " ORDER BY s.position LIMIT %s",
        (namespace, run, after, limit + 1),
    )
    rows = await cursor.fetchall()
    if not rows:
        await _run_id(conn, namespace, run)  # NotFoundError for a missing run
    return [
        (
            position,
            snapshot_info(
                name,
                stored,
                ranks,
                digest,
                size,
                _info(SnapshotKey(namespace, run, name, ranks[0]), envelope, info, data, digest),
            ),
        )
        for position, name, stored, ranks, digest, size, info, envelope, data in rows
    ]


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _info(key: SnapshotKey, envelope: Any, info: str, run_dictionary: Any, digest: str) -> str:
    """An entry's listing info, unpacked and checked if it was stored packed."""
    try:
        return unpack_info(bytes(envelope), info, _bytes(run_dictionary), digest)
    except StoreError as exc:
        raise StoreError(f"{snapshot_label(key)}: {exc}") from None


async def steps(
    conn: Conn,
    namespace: str,
    run: str,
    rank: int,
    start: int | None,
    generator: str | None,
    after: tuple[int, int] | None,
    limit: int,
) -> list[tuple[int, int, StepRow]]:
    """Up to ``limit + 1`` (step key, snapshot id, row) of ``Store.steps``, from the index on
    (run_id, rank, step, snapshot_id) that includes the digest and entry id; an entry's
    metadata is read only for a generator's position or a step past int64.
    Its queries share one snapshot of the database (a read-only REPEATABLE READ
    transaction), so a row's state hash is never missed for a delete in between."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return await _steps(conn, namespace, run, rank, start, generator, after, limit)


async def _steps(
    conn: Conn,
    namespace: str,
    run: str,
    rank: int,
    start: int | None,
    generator: str | None,
    after: tuple[int, int] | None,
    limit: int,
) -> list[tuple[int, int, StepRow]]:
    run_id = await _run_id(conn, namespace, run)
    where, args = "e.run_id = %s AND e.rank = %s AND e.step IS NOT NULL", [run_id, rank]
    if after is not None:
        where += " AND (e.step, e.snapshot_id) > (%s, %s)"
        args.extend(after)
    elif start is not None:
        where += " AND e.step >= %s"
        args.append(min(start, STEP_KEY_MAX))
    cursor = await conn.execute(
        "SELECT e.step, e.snapshot_id, e.id, s.name, e.digest FROM entries e"
        f" JOIN snapshots s ON s.id = e.snapshot_id WHERE {where}"
        " ORDER BY e.step, e.snapshot_id LIMIT %s",
        (*args, limit + 1),
    )
    rows = await cursor.fetchall()
    infos: dict[int, str] = {}
    if needed := info_needed(rows, generator):
        found = await conn.execute(
            "SELECT e.id, e.envelope, e.info, d.data, e.digest, s.name FROM entries e"
            " JOIN snapshots s ON s.id = e.snapshot_id"
            " LEFT JOIN dictionaries d ON d.run_id = e.run_id WHERE e.id = ANY(%s::bigint[])",
            (needed,),
        )
        infos = {
            entry_id: _info(
                SnapshotKey(namespace, run, name, rank), envelope, info, run_dictionary, digest
            )
            for entry_id, envelope, info, run_dictionary, digest, name in await found.fetchall()
        }
    hashes: dict[int, str] = {}
    if generator is not None and rows:
        wanted = state_positions(rows, infos, generator)
        found = await conn.execute(
            "SELECT es.entry_id, es.state_hash FROM unnest(%s::bigint[], %s::int[]) AS w(e, p)"
            " JOIN entry_states es ON es.entry_id = w.e AND es.position = w.p",
            ([e for e, _p in wanted], [p for _e, p in wanted]),
            binary=True,
        )
        hashes = {entry_id: bytes(digest).hex() for entry_id, digest in await found.fetchall()}
    return step_rows(rows, infos, hashes)


async def _collect(conn: Conn, hashes: list[bytes]) -> int:
    """Delete the blobs among ``hashes`` that no entry refers to any more; returns how many."""
    if not hashes:
        return 0
    cursor = await conn.execute(
        "SELECT DISTINCT base FROM states WHERE hash = ANY(%s) AND base IS NOT NULL", (hashes,)
    )
    hashes = sorted({*hashes, *(bytes(r[0]) for r in await cursor.fetchall())})
    # Lock first, in hash order: puts that already refer to a blob (or base a delta on it)
    # commit before we look; puts that would refer to it later wait for us, then retry.
    await conn.execute(
        "SELECT 1 FROM states WHERE hash = ANY(%s) ORDER BY hash FOR UPDATE", (hashes,)
    )
    unused = (
        "s.hash = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM entry_states es WHERE es.state_hash = s.hash)"
    )
    cursor = await conn.execute(
        f"DELETE FROM states s WHERE {unused} AND s.base IS NOT NULL", (hashes,)
    )
    removed = cursor.rowcount
    cursor = await conn.execute(
        f"DELETE FROM states s WHERE {unused} AND s.base IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM states d WHERE d.base = s.hash)",
        (hashes,),
    )
    return removed + cursor.rowcount


async def _delete_snapshots(conn: Conn, snapshot_ids: list[int]) -> tuple[int, list[bytes]]:
    """Delete the snapshots and their entries: (entries removed, blob hashes they used)."""
    cursor = await conn.execute(
        "WITH gone AS (DELETE FROM entry_states WHERE entry_id IN"
        " (SELECT id FROM entries WHERE snapshot_id = ANY(%s)) RETURNING state_hash)"
        " SELECT DISTINCT state_hash FROM gone",
        (snapshot_ids,),
    )
    hashes = [bytes(r[0]) for r in await cursor.fetchall()]
    cursor = await conn.execute("DELETE FROM entries WHERE snapshot_id = ANY(%s)", (snapshot_ids,))
    removed = cursor.rowcount
    await conn.execute("DELETE FROM snapshots WHERE id = ANY(%s)", (snapshot_ids,))
    return removed, hashes


async def delete_snapshot(conn: Conn, namespace: str, run: str, name: str) -> int:
    run_id = await _run_id(conn, namespace, run, lock=True)  # waits for puts in flight
    snapshot_id = await _snapshot_id(conn, run_id, SnapshotKey(namespace, run, name))
    removed, hashes = await _delete_snapshots(conn, [snapshot_id])
    await conn.execute(
        "UPDATE runs SET snapshots = snapshots - 1, updated = %s WHERE id = %s",
        (time.time(), run_id),
    )
    await _drop_empty_run(conn, run_id)
    await _collect(conn, hashes)
    return removed


async def count_snapshots(conn: Conn) -> int:
    row = await _one(conn, "SELECT coalesce(sum(snapshots), 0) FROM runs")
    return int(row[0]) if row else 0


# -- retention and bounded deletes --------------------------------------------------------

BATCH = 500  # snapshots deleted per transaction: other writers wait at most one batch
RUN_PAGE = 500  # runs read per statement by a retention pass
TABLES = ("runs", "snapshots", "entries", "entry_states", "states")


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of a retention pass or of a run's delete.

    Attributes:
        snapshots: (stored, position, name) of the snapshots deleted (in a dry run: up to
            ``SAMPLE`` of those that would be, oldest first).
        count: how many snapshots were (or would be) deleted.
        ranks: how many entries they held.
        blobs: how many state blobs were freed.
        more: the batch was full: there may be more to delete.
    """

    snapshots: list[tuple[float, int, str]]
    count: int
    ranks: int
    blobs: int
    more: bool


async def run_extent(conn: Conn, namespace: str, run: str) -> tuple[int, int]:
    """(the run's id, its last position): a delete begun now removes positions up to it."""
    row = await _one(
        conn, "SELECT id, positions FROM runs WHERE namespace = %s AND name = %s", (namespace, run)
    )
    if row is None:
        raise NotFoundError(f"no run {namespace}/{run}")
    return int(row[0]), int(row[1])


async def retention_runs(
    conn: Conn,
    *,
    pattern: str,
    namespaces: tuple[str, ...],
    keep_last: int | None,
    after: tuple[str, str] | None,
) -> list[tuple[int, str, str, int | None]]:
    """Up to ``RUN_PAGE`` runs after ``after`` whose "namespace/run" matches ``pattern`` and
    a namespace of ``namespaces``: (id, namespace, run, last position a pass may delete, or None
    when ``keep_last`` keeps them all)."""
    where = ["(namespace || '/' || name) LIKE %s", "namespace LIKE ANY (%s::text[])"]
    args: list[Any] = [like_pattern(pattern), [like_pattern(p) for p in namespaces]]
    if after is not None:
        where.append("(namespace, name) > (%s, %s)")
        args.extend(after)
    through = "positions"
    if keep_last is not None:  # the newest snapshot beyond the kept ones
        through = (
            "(SELECT position FROM snapshots s WHERE s.run_id = runs.id"
            " ORDER BY position DESC OFFSET %s LIMIT 1)"
        )
        args.insert(0, keep_last)
    cursor = await conn.execute(
        f"SELECT id, namespace, name, {through} FROM runs"
        f" WHERE {' AND '.join(where)} ORDER BY namespace, name LIMIT %s",
        (*args, RUN_PAGE),
    )
    return [(int(i), ns, name, t) for i, ns, name, t in await cursor.fetchall()]


def _doomed(stored_before: float | None) -> str:
    return "run_id = %s AND position <= %s" + (
        " AND stored < %s" if stored_before is not None else ""
    )


def _doomed_args(run_id: int, through: int, stored_before: float | None) -> tuple[Any, ...]:
    return (run_id, through) if stored_before is None else (run_id, through, stored_before)


async def delete_batch(
    conn: Conn, *, run_id: int, through: int, stored_before: float | None = None
) -> Batch:
    """Delete, oldest first, up to ``BATCH`` of the run's snapshots at positions up to
    ``through`` (and stored before ``stored_before``), their entries and the blobs no entry
    uses any more; remove the run once it holds no snapshot. Runs in the store's transaction:
    the run's row is locked first, so puts to it in flight commit before and wait after."""
    if await _one(conn, "SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run_id,)) is None:
        return Batch([], 0, 0, 0, more=False)  # deleted meanwhile
    cursor = await conn.execute(
        f"SELECT id, stored, position, name FROM snapshots WHERE {_doomed(stored_before)}"
        " ORDER BY position LIMIT %s",
        (*_doomed_args(run_id, through, stored_before), BATCH),
    )
    rows = await cursor.fetchall()
    if not rows:
        return Batch([], 0, 0, 0, more=False)
    ranks, hashes = await _delete_snapshots(conn, [r[0] for r in rows])
    await conn.execute(
        "UPDATE runs SET snapshots = snapshots - %s WHERE id = %s", (len(rows), run_id)
    )
    await _drop_empty_run(conn, run_id)
    blobs = await _collect(conn, hashes)
    deleted = [(float(s), int(p), name) for _id, s, p, name in rows]
    return Batch(deleted, len(rows), ranks, blobs, more=len(rows) == BATCH)


async def count_batch(
    conn: Conn, *, run_id: int, through: int, stored_before: float | None = None
) -> Batch:
    """What ``delete_batch`` calls would delete from the run, all batches together, deleting
    nothing: the counts, and the oldest ``SAMPLE`` snapshots."""
    args = _doomed_args(run_id, through, stored_before)
    row = await _one(
        conn,
        "SELECT count(*), coalesce(sum(d.ranks), 0) FROM (SELECT (SELECT count(*) FROM entries"
        "   WHERE snapshot_id = snapshots.id) AS ranks"
        f" FROM snapshots WHERE {_doomed(stored_before)}) d",
        args,
    )
    cursor = await conn.execute(
        f"SELECT stored, position, name FROM snapshots WHERE {_doomed(stored_before)}"
        " ORDER BY stored, position LIMIT %s",
        (*args, SAMPLE),
    )
    sample = [(float(s), int(p), name) for s, p, name in await cursor.fetchall()]
    count, ranks = row if row else (0, 0)
    return Batch(sample, int(count), int(ranks), 0, more=False)


async def vacuum(conn: Conn) -> int:
    """VACUUM the tables (on an autocommit connection of its own, with no statement timeout);
    returns by how many bytes their files shrank."""
    await conn.execute("SET statement_timeout = 0")
    size = "SELECT sum(pg_total_relation_size(t))::bigint FROM unnest(%s::regclass[]) t"
    before = await _one(conn, size, (list(TABLES),))
    await conn.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
    after = await _one(conn, size, (list(TABLES),))
    return max(0, int(before[0]) - int(after[0])) if before and after else 0


async def statement_timeout(conn: Conn) -> float:
    """The connection's statement_timeout in seconds (0: none)."""
    row = await _one(
        conn, "SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'statement_timeout'"
    )
    return float(row[0]) if row else 0.0


async def check(conn: Conn) -> None:
    await conn.execute("SELECT 1")
