"""The PostgreSQL backend: psycopg 3 and an asyncio connection pool; replicas share one database.

URL: ``postgresql://user[:password]@host[:port]/database`` (``postgres://`` too), with any
libpq option as a query parameter (``?sslmode=require``). Each server keeps a pool of up to
``POOL_MAX`` connections, so n replicas need ``n * POOL_MAX`` of the server's
``max_connections``. The schema is migrated on open, under an advisory lock, so replicas
starting together migrate once. See postgres_sql.py for how concurrent writers stay exact.

Faults end in a ``StoreError`` (a 503) within a bounded time, never a hang:

- each pooled connection starts with ``lock_timeout``, ``statement_timeout`` and
  ``idle_in_transaction_session_timeout`` (``SERVER_OPTIONS``) and TCP keepalives
  (``KEEPALIVES``); the URL's own ``options`` (and ``PGOPTIONS``) come after ours and win,
  as do keepalive parameters the URL gives.
- each database call (one transaction) is bounded on the client too, by the statement
  timeout plus ``CALL_MARGIN``: past that its connection is dropped, so a server that stopped
  answering (frozen, or cut off without a reset) is a 503 too.
- writes hold at most ``WRITE_SLOTS`` of the pool's connections: writes waiting on a lock
  leave connections for reads and /healthz, whose check has a short timeout of its own.
- the pool gives up a reconnection attempt after ``RECONNECT_TIMEOUT`` and the next request
  starts another, so after an outage of any length the store recovers within seconds.

With a blob store (``open(url, blobs="s3://BUCKET/PREFIX")``), whole state rows of at least
``BLOB_MIN`` bytes keep their state in the bucket, keyed by its SHA-256: a put uploads the
objects its new rows need inside its transaction, before the commit, so a committed row
always has its object; an upload that fails rolls the put back (a 503). GETs fetch a
snapshot's objects concurrently (bases through a cache). Deletes remove rows only;
``sweep_blobs`` deletes the objects no row refers to, and ``collect`` runs it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from rngvault._errors import MissingExtraError, StoreError
from rngvault._snapshot import Snapshot
from rngvault.server.storage import redact
from rngvault.server.storage.base import (
    SAMPLE,
    Collected,
    Globs,
    Page,
    RunInfo,
    SnapshotInfo,
    SnapshotKey,
    StepRow,
    Stored,
    StoreFullError,
    check_rules,
    decode_cursor,
    globs,
    run_page,
    snapshot_page,
    step_cursor,
    step_page,
)
from rngvault.server.storage.blobs import BLOB_MIN, GRACE, BlobError, S3Blobs
from rngvault.server.storage.content import SameStates, cacheable, prepare, settle
from rngvault.server.storage.deltas import Bases, Chains, Row

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool

    from rngvault.server.storage import postgres_sql as sql
except ImportError as exc:
    raise MissingExtraError(exc.name or "psycopg", "postgres", "the PostgreSQL backend") from None

T = TypeVar("T")
log = logging.getLogger("rngvault.server")

POOL_MIN = 2
POOL_MAX = 16
WRITE_SLOTS = 12  # writes use at most this many of the POOL_MAX connections
POOL_TIMEOUT = 5.0  # seconds a request waits for a connection before answering 503
CHECK_TIMEOUT = 1.0  # seconds /healthz waits for the database, all in all
CONNECT_TIMEOUT = 10  # seconds, libpq's connect_timeout unless the URL gives one
RECONNECT_TIMEOUT = 5.0  # seconds the pool retries one reconnection (backoff 1 s, 2 s, ...)
LOCK_TIMEOUT = "3s"  # a statement waiting this long for a row lock fails
MAX_DICTIONARIES = 10_000  # runs' dictionaries kept in memory at most
STATEMENT_TIMEOUT = "5s"  # a statement running this long is cancelled by the server
IDLE_IN_TRANSACTION_TIMEOUT = "30s"  # the server ends a transaction left open this long
CALL_MARGIN = 3.0  # seconds beyond the statement timeout before a call's connection is dropped
SWEEP_BATCH = 256  # objects a sweep checks and deletes per transaction (puts wait for one)
# Seconds a put's uploads may take: within the call bound, and sweeps wait for them.
UPLOAD_TIMEOUT = 5.0
FETCH_TIMEOUT = 8.0  # seconds a GET waits for its objects, under a client's 10 s timeout
SERVER_OPTIONS = (
    f"-c lock_timeout={LOCK_TIMEOUT} -c statement_timeout={STATEMENT_TIMEOUT}"
    f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT}"
)
# A dead peer is noticed after about 30 + 3 * 10 s of silence.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
ATTEMPTS = 5
# Outcomes of a race with another transaction; running the transaction again resolves them.
RETRY = (
    pg_errors.ForeignKeyViolation,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    sql.Retry,
)
# A file path, quoted as PostgreSQL quotes them or bare: server details a client has no use for.
_PATH = re.compile(r'"[^"]*/[^"]*"|(?<![\w/.])/(?:[\w.\-]+/)+[\w.\-]*')


def _without_paths(message: str) -> str:
    return _PATH.sub("<path>", message)


def map_error(exc: psycopg.Error) -> StoreError:
    """The rngvault error for a psycopg error (the one place they are translated). File paths
    in PostgreSQL's message are left out of the answer; the log keeps the full error."""
    message = str(exc).strip()
    shown = _without_paths(message)
    if shown != message:
        log.warning("PostgreSQL: %s: %s", type(exc).__name__, message)
    if isinstance(exc, pg_errors.DiskFull):
        return StoreFullError(f"the database is full, nothing was written: {shown}")
    if isinstance(exc, (pg_errors.LockNotAvailable, pg_errors.QueryCanceled)):
        return StoreError(f"PostgreSQL is busy (lock or statement timeout), retry: {shown}")
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"PostgreSQL is unavailable: {shown}")
    return StoreError(f"PostgreSQL error: {type(exc).__name__}: {shown}")


def conninfo(url: str) -> str:
    """The libpq URL for ``url`` (``postgres://`` and ``postgresql+psycopg://`` accepted)."""
    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres") or not parts.path[1:]:
        raise StoreError(
            f"invalid PostgreSQL URL {redact(url)!r}: write postgresql://user@host:5432/database"
        )
    return urlunsplit(("postgresql", *parts[1:]))


def connect_args(info: str, *, server_options: str = "") -> dict[str, Any]:
    """libpq parameters to connect to ``info`` with: ``connect_timeout`` and the keepalives
    where neither the URL nor the environment sets them, and ``server_options`` before the
    ``options`` of ``PGOPTIONS`` and of the URL (of two settings of one name, the last wins)."""
    given = conninfo_to_dict(info)
    defaults: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES}
    args = {
        name: value
        for name, value in defaults.items()
        if name not in given
        and not (name == "connect_timeout" and "PGCONNECT_TIMEOUT" in os.environ)
    }
    given_options = str(given.get("options") or "")
    options = " ".join(filter(None, (server_options, os.environ.get("PGOPTIONS"), given_options)))
    if options:
        args["options"] = options
    return args


def _cannot_open(url: str, exc: psycopg.Error) -> StoreError:
    return StoreError(
        f"cannot open the PostgreSQL database {redact(url)!r}: {_without_paths(str(exc))}"
    )


class _Lost(Exception):
    """The connection broke under a call (the database restarted): worth one more try."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


class _Deadline:
    """Drops ``conn`` if the call outlives ``seconds`` (None: no bound) by shutting its socket
    down: psycopg then fails the call at once as a lost connection, and the pool discards it.
    Cancelling the call instead would make psycopg first ask the server to cancel the query,
    which a frozen server never answers."""

    def __init__(self, conn: sql.Conn, seconds: float | None) -> None:
        self.fired = False
        self._conn = conn
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(seconds, self._drop) if seconds is not None else None

    def _drop(self) -> None:
        self.fired = True
        with (
            suppress(OSError, psycopg.Error),
            socket.socket(fileno=os.dup(self._conn.pgconn.socket)) as sock,
        ):
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class PostgresStore:
    """A ``Store`` in a PostgreSQL database, its large states in a blob store if given one.

    Attributes:
        url: the database's URL without its password.
        blobs: the blob store, or None (every state in the database).
        grace: the grace period (seconds) of the sweep ``collect`` runs.
    """

    def __init__(
        self,
        url: str,
        pool: AsyncConnectionPool[Any],
        *,
        call_limit: float | None,
        blobs: S3Blobs | None = None,
    ) -> None:
        self.url = redact(url)
        self._chains = Chains()
        self._chains_lock = threading.Lock()  # the chains are used in worker threads
        self._dictionaries: dict[int, bytes] = {}  # runs' dictionaries by run id, as stored
        self._info = conninfo(url)
        self._pool = pool
        self._call_limit = call_limit
        self._writes = asyncio.Semaphore(WRITE_SLOTS)
        self._checking: asyncio.Future[None] | None = None
        self.blobs = blobs
        self.grace = GRACE
        self._bases = Bases()  # whole base states read from the blob store

    @classmethod
    async def open(cls, url: str, *, blobs: str | S3Blobs | None = None) -> PostgresStore:
        """Open the database ``url`` names (migrating its schema first).

        Args:
            url: ``postgresql://user[:password]@host[:port]/database``.
            blobs: an ``s3://BUCKET/PREFIX`` URL (or an ``S3Blobs``) to keep large whole
                states in; None keeps every state in the database.

        Raises:
            StoreError: the database cannot be opened, or the blobs URL is invalid
                (``BlobsUrlError``); ``MissingExtraError`` without obstore.
        """
        info = conninfo(url)
        bucket = S3Blobs(blobs) if isinstance(blobs, str) else blobs
        try:
            # One connection first: it says why when the database cannot be reached.
            conn = await psycopg.AsyncConnection.connect(
                info, autocommit=True, **connect_args(info)
            )
            async with conn:
                await sql.migrate(conn)
        except psycopg.Error as exc:
            raise _cannot_open(url, exc) from None
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            info,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            kwargs={"autocommit": True, **connect_args(info, server_options=SERVER_OPTIONS)},
            open=False,
            name="rngvault",
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT)
            async with pool.connection() as conn:
                statement_timeout = await sql.statement_timeout(conn)
        except psycopg.Error as exc:
            await pool.close()
            raise _cannot_open(url, exc) from None
        # 0 turns statement_timeout off (options=-c statement_timeout=0): the bound goes too.
        call_limit = statement_timeout + CALL_MARGIN if statement_timeout > 0 else None
        return cls(url, pool, call_limit=call_limit, blobs=bucket)

    async def _run(
        self,
        fn: Callable[[sql.Conn], Awaitable[T]],
        *,
        transaction: bool,
        pipeline: bool = False,
        within: float | None = None,
    ) -> T:
        """``fn(connection)``, in a transaction and in pipeline mode when asked; races and a
        connection that broke (the database restarted) are retried, up to ``ATTEMPTS`` runs.
        ``within``: seconds for it all, waits and retries included (default: each run waits
        up to ``POOL_TIMEOUT`` for a connection and takes up to the call bound)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within if within is not None else None
        error: Exception | None = None
        reconnected = False
        for _attempt in range(ATTEMPTS):
            wait, limit = POOL_TIMEOUT, self._call_limit
            if deadline is not None:
                wait = limit = deadline - loop.time()
                if wait <= 0:
                    break
            try:
                return await self._call(fn, transaction, pipeline, wait=wait, limit=limit)
            except RETRY as exc:
                error = exc
            except _Lost as lost:
                if reconnected:
                    raise map_error(lost.error) from None
                error, reconnected = lost.error, True
                # Drop the other connections that broke with it before trying again.
                await self._check_pool(wait if deadline is None else deadline - loop.time())
            except psycopg.Error as exc:
                raise map_error(exc) from None
        if isinstance(error, psycopg.Error):
            raise map_error(error)
        raise StoreError(f"a write kept racing with concurrent deletes ({ATTEMPTS} attempts)")

    async def _call(
        self,
        fn: Callable[[sql.Conn], Awaitable[T]],
        transaction: bool,
        pipeline: bool,
        *,
        wait: float,
        limit: float | None,
    ) -> T:
        """One run of ``fn``: waits up to ``wait`` seconds for a connection (and, for a
        write, a write slot); drops the connection if the run takes over ``limit`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if transaction:
            try:
                if self._writes.locked():  # wait_for costs a task: only when waiting
                    await asyncio.wait_for(self._writes.acquire(), wait)
                else:
                    await self._writes.acquire()
            except asyncio.TimeoutError:
                raise StoreError(
                    f"PostgreSQL is busy: all {WRITE_SLOTS} write connections stayed in use"
                    f" for {wait:.1f} s"
                ) from None
        try:
            async with self._pool.connection(timeout=max(deadline - loop.time(), 0.001)) as conn:
                bound = _Deadline(conn, limit)
                try:
                    if not transaction:
                        return await fn(conn)
                    if not pipeline:
                        async with conn.transaction():
                            return await fn(conn)
                    async with conn.pipeline(), conn.transaction():
                        return await fn(conn)
                except psycopg.Error as exc:
                    if bound.fired:
                        raise StoreError(
                            f"PostgreSQL did not answer within {limit:.1f} s;"
                            " the connection was dropped"
                        ) from None
                    if conn.broken and isinstance(exc, psycopg.OperationalError):
                        raise _Lost(exc) from None
                    raise
                finally:
                    bound.cancel()
        finally:
            if transaction:
                self._writes.release()

    async def _check_pool(self, within: float) -> None:
        """Have the pool test its idle connections and replace the broken ones, waiting up to
        ``within`` seconds: a check cut short would lose connections, so it runs on alone."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._pool.check())
            self._checking.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.wait({self._checking}, timeout=max(within, 0))

    async def put(self, key: SnapshotKey, body: bytes, snapshot: Snapshot) -> Stored:
        prepared = prepare(body, snapshot)
        where = (key.namespace, key.run, key.rank)
        attempts = 0
        rows: list[Row] = []
        learned: dict[int, bytes] = {}

        async def attempt(conn: sql.Conn) -> tuple[Stored, set[bytes]]:
            nonlocal attempts, rows
            retry = attempts > 0  # a retry: a base the last attempt relied on may be gone
            attempts += 1

            def encode() -> list[Row]:
                with self._chains_lock:
                    if retry:
                        self._chains.drop(where)
                    return [
                        self._chains.encode(
                            where, prepared.generators.get(h), prepared.blobs[h], h, snapshot
                        )
                        for h in sorted(prepared.blobs)
                    ]

            # The MT19937 advance a delta may search is CPU work: off the event loop.
            rows = await asyncio.to_thread(encode)
            learned.clear()
            learned.update(self._dictionaries)
            external = await self._upload(conn, rows, prepared.blobs)
            return await sql.put(
                conn,
                key,
                prepared,
                rows,
                step=snapshot.metadata.step,
                dictionaries=learned,
                external=external,
            )

        try:
            stored, inserted = await self._run(attempt, transaction=True, pipeline=True)
        except sql.Unchanged as same:
            return same.stored
        except SameStates:
            return await settle(self, key, snapshot)
        if len(learned) > len(self._dictionaries):  # committed; run ids are never reused
            self._dictionaries = learned if cacheable(learned, MAX_DICTIONARIES) else {}
        bases = [row for row in rows if row.hash in inserted and row.state is not None]
        if bases:  # committed whole: bases for the next deltas

            def rebase() -> None:
                with self._chains_lock:
                    for row in bases:
                        self._chains.rebase(where, row, row.hash, snapshot)

            await asyncio.to_thread(rebase)
        return stored

    async def _upload(
        self, conn: sql.Conn, rows: list[Row], states: Mapping[bytes, bytes]
    ) -> set[bytes]:
        """The hashes of ``rows`` to store external, their objects uploaded (those no row has
        yet), under the shared blob lock, in the put's transaction: before its commit."""
        if self.blobs is None:
            return set()
        external = {r.hash for r in rows if r.base is None and len(r.data) >= BLOB_MIN}
        if not external:
            return external
        present = await sql.hold_blobs(conn, sorted(external))
        missing = sorted(external - present)
        uploads = asyncio.gather(*(self.blobs.put_async(h, states[h]) for h in missing))
        try:
            await asyncio.wait_for(uploads, UPLOAD_TIMEOUT)
        except asyncio.TimeoutError:
            raise BlobError(
                f"storing {len(missing)} blobs: {self.blobs.url} did not take them within"
                f" {UPLOAD_TIMEOUT} s; nothing was stored",
                url=self.blobs.url,
                digest=None,
                reason="unreachable",
            ) from None
        return external

    async def get(self, key: SnapshotKey) -> bytes:
        row = await self._run(lambda conn: sql.fetch(conn, key), transaction=False)
        if self.blobs is not None:
            try:
                fetched = await asyncio.wait_for(self._fetch_states(row), FETCH_TIMEOUT)
            except TimeoutError:
                raise StoreError(
                    f"the blob store {self.blobs.url} did not answer within {FETCH_TIMEOUT:g} s"
                ) from None
            row = sql.with_states(row, fetched)
        else:
            states, bases = sql.external_states(row)
            if states or bases:
                raise StoreError(
                    f"state {[*states, *bases][0].hex()} is kept in a blob store, and none is "
                    "configured (start the server with --blobs s3://BUCKET/PREFIX)"
                )
        # Rebuilding states (an MT19937 advance) and unpacking is CPU work: off the loop.
        return await asyncio.to_thread(sql.assemble, key, row)

    async def _fetch_states(self, row: tuple[Any, ...]) -> dict[bytes, bytes]:
        """The bytes of a fetched row's external states and bases, fetched concurrently
        (bases found in the cache are not fetched again)."""
        states, bases = sql.external_states(row)
        found = {h: b for h in bases if (b := self._bases.get(h)) is not None}
        wanted = [*states, *(h for h in bases if h not in found)]
        if not wanted:
            return found
        assert self.blobs is not None
        fetched = await self.blobs.get_many(wanted)
        for h in bases:
            if h in fetched:
                self._bases.put(h, fetched[h])
        return {**found, **fetched}

    async def ranks(self, namespace: str, run: str, name: str) -> tuple[int, ...]:
        key = SnapshotKey(namespace, run, name, 0)
        return await self._run(lambda conn: sql.stored_ranks(conn, key), transaction=False)

    async def list_runs(
        self,
        *,
        namespace: str | None = None,
        pattern: Globs = "*",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[RunInfo]:
        after = decode_cursor(cursor, str, str) if cursor else None
        patterns = globs(pattern)
        rows = await self._run(
            lambda conn: sql.list_runs(conn, namespace, patterns, after, limit), transaction=False
        )
        return run_page(rows, limit)

    async def list_snapshots(
        self, namespace: str, run: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[SnapshotInfo]:
        after = decode_cursor(cursor, int)[0] if cursor else 0
        rows = await self._run(
            lambda conn: sql.list_snapshots(conn, namespace, run, after, limit),
            transaction=False,
        )
        return snapshot_page(rows, limit)

    async def run_info(self, namespace: str, run: str) -> tuple[RunInfo, str]:
        return await self._run(lambda conn: sql.run_info(conn, namespace, run), transaction=False)

    async def put_record(self, namespace: str, run: str, record: str) -> tuple[bool, str]:
        return await self._run(
            lambda conn: sql.put_record(conn, namespace, run, record), transaction=True
        )

    async def steps(
        self,
        namespace: str,
        run: str,
        *,
        rank: int = 0,
        start: int | None = None,
        generator: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[StepRow]:
        after = step_cursor(cursor)
        rows = await self._run(
            lambda conn: sql.steps(conn, namespace, run, rank, start, generator, after, limit),
            transaction=False,
        )
        return step_page(rows, limit, start)

    async def delete_snapshot(self, namespace: str, run: str, name: str) -> int:
        return await self._run(
            lambda conn: sql.delete_snapshot(conn, namespace, run, name), transaction=True
        )

    async def delete_run(self, namespace: str, run: str) -> int:
        """Deletes the snapshots the run held when the delete began, ``sql.BATCH`` per
        transaction; a snapshot stored meanwhile stays, in the run."""
        run_id, through = await self._run(
            lambda conn: sql.run_extent(conn, namespace, run), transaction=False
        )
        removed = 0
        while True:
            batch = await self._run(
                partial(sql.delete_batch, run_id=run_id, through=through), transaction=True
            )
            removed += batch.count
            if not batch.more:
                break
        if not removed:  # a run with a record and no snapshot goes too, as in SQLite
            await self._run(lambda conn: sql.drop_empty_run(conn, namespace, run), transaction=True)
        return removed

    async def collect(
        self,
        pattern: str,
        *,
        keep_last: int | None = None,
        stored_before: float | None = None,
        namespaces: Globs = "*",
        dry_run: bool = False,
    ) -> Collected:
        """Snapshots stored after the pass began are never deleted by it."""
        check_rules(keep_last, stored_before)
        runs = snapshots = ranks = blobs = 0
        oldest: list[tuple[float, str, str, int, str]] = []  # stored, namespace, run, position
        after: tuple[str, str] | None = None
        while True:
            page = await self._run(
                partial(
                    sql.retention_runs,
                    pattern=pattern,
                    namespaces=globs(namespaces),
                    keep_last=keep_last,
                    after=after,
                ),
                transaction=False,
            )
            for run_id, namespace, run, through in page:
                runs += 1
                if through is None:
                    continue
                doomed = partial(
                    sql.delete_batch if not dry_run else sql.count_batch,
                    run_id=run_id,
                    through=through,
                    stored_before=stored_before,
                )
                while True:
                    batch = await self._run(doomed, transaction=not dry_run)
                    snapshots += batch.count
                    ranks += batch.ranks
                    blobs += batch.blobs
                    oldest = heapq.nsmallest(
                        SAMPLE,
                        oldest + [(s, namespace, run, p, n) for s, p, n in batch.snapshots],
                    )
                    if not batch.more:
                        break
            if len(page) < sql.RUN_PAGE:
                break
            after = page[-1][1], page[-1][2]
        objects = await self.sweep_blobs(self.grace) if not dry_run else 0
        return Collected(
            runs=runs,
            snapshots=snapshots,
            ranks=ranks,
            blobs=blobs,
            dry_run=dry_run,
            sample=tuple((namespace, run, name) for _s, namespace, run, _p, name in oldest),
            objects=objects,
        )

    async def vacuum(self) -> int:
        """``VACUUM`` on rngvault's tables, on a connection of its own with no statement
        timeout: the space of deleted rows becomes reusable; files shrink only where their
        end is free. Returns by how many bytes the tables shrank."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._info, autocommit=True, **connect_args(self._info)
            )
            async with conn:
                return await sql.vacuum(conn)
        except psycopg.Error as exc:
            raise map_error(exc) from None

    async def sweep_blobs(self, grace: float = GRACE) -> int:
        """Delete the objects of the blob store that no state row refers to and that were
        last put at least ``grace`` seconds ago; returns how many. Each batch of
        ``SWEEP_BATCH`` is checked and deleted under the blob lock taken exclusively, so an
        object a put in flight (on any replica) uploaded or relies on is never deleted.
        Without a blob store: 0.

        Raises:
            StoreError: the database or the blob store failed (``BlobError``).
        """
        if self.blobs is None:
            return 0
        delete = self.blobs.delete_async
        removed = 0
        batch: list[bytes] = []

        async def flush() -> int:
            digests = list(batch)
            batch.clear()
            return await self._run(
                lambda conn: sql.sweep_batch(conn, digests, delete), transaction=True
            )

        async for digest, _modified in self.blobs.list_older_async(grace):
            batch.append(digest)
            if len(batch) >= SWEEP_BATCH:
                removed += await flush()
        if batch:
            removed += await flush()
        return removed

    async def count_snapshots(self) -> int:
        return await self._run(sql.count_snapshots, transaction=False)

    async def check(self) -> None:
        await self._run(sql.check, transaction=False, within=CHECK_TIMEOUT)
        if self.blobs is not None:
            try:
                await asyncio.wait_for(self.blobs.check(), CHECK_TIMEOUT)
            except asyncio.TimeoutError:
                raise BlobError(
                    f"the blob store {self.blobs.url} did not answer within {CHECK_TIMEOUT} s",
                    url=self.blobs.url,
                    digest=None,
                    reason="unreachable",
                ) from None

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
        await self._pool.close()
