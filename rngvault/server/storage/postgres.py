"""The PostgreSQL backend: psycopg 3 and an asyncio connection pool; replicas share one database.

URL: ``postgresql://user[:password]@host[:port]/database`` (``postgres://`` too), with any
libpq option as a query parameter (``?sslmode=require``). Each server keeps a pool of up to
``POOL_MAX`` connections, so n replicas need ``n * POOL_MAX`` of the server's
``max_connections``. The schema is migrated on open, under an advisory lock, so replicas
starting together migrate once. See postgres_sql.py for how concurrent writers stay exact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from rngvault._errors import MissingExtraError, StoreError
from rngvault._snapshot import Snapshot
from rngvault.server.storage import redact
from rngvault.server.storage.base import (
    Page,
    RunInfo,
    SnapshotInfo,
    SnapshotKey,
    Stored,
    StoreFullError,
    decode_cursor,
    run_page,
    snapshot_page,
)
from rngvault.server.storage.content import prepare

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg_pool import AsyncConnectionPool

    from rngvault.server.storage import postgres_sql as sql
except ImportError as exc:
    raise MissingExtraError(exc.name or "psycopg", "postgres", "the PostgreSQL backend") from None

T = TypeVar("T")
POOL_MIN = 2
POOL_MAX = 16
POOL_TIMEOUT = 5.0  # seconds a request waits for a connection before answering 503
CONNECT_TIMEOUT = 10  # seconds, for libpq's connect_timeout
ATTEMPTS = 5
# Outcomes of a race with another transaction; running the transaction again resolves them.
RETRY = (
    pg_errors.ForeignKeyViolation,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    sql.Retry,
)


def map_error(exc: psycopg.Error) -> StoreError:
    """The rngvault error for a psycopg error (the one place they are translated)."""
    if isinstance(exc, pg_errors.DiskFull):
        return StoreFullError(f"the database is full, nothing was written: {exc}")
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"PostgreSQL is unavailable: {exc}")
    return StoreError(f"PostgreSQL error: {type(exc).__name__}: {exc}")


def conninfo(url: str) -> str:
    """The libpq URL for ``url`` (``postgres://`` and ``postgresql+psycopg://`` accepted)."""
    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres") or not parts.path[1:]:
        raise StoreError(
            f"invalid PostgreSQL URL {redact(url)!r}: write postgresql://user@host:5432/database"
        )
    return urlunsplit(("postgresql", *parts[1:]))


def _cannot_open(url: str, exc: psycopg.Error) -> StoreError:
    return StoreError(f"cannot open the PostgreSQL database {redact(url)!r}: {exc}")


class PostgresStore:
    """A ``Store`` in a PostgreSQL database."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Any]) -> None:
        self.url = redact(url)
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        info = conninfo(url)
        try:
            # One connection first: it says why when the database cannot be reached.
            conn = await psycopg.AsyncConnection.connect(
                info, autocommit=True, connect_timeout=CONNECT_TIMEOUT
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
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            open=False,
            name="rngvault",
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT)
        except psycopg.Error as exc:
            await pool.close()
            raise _cannot_open(url, exc) from None
        return cls(url, pool)

    async def _run(
        self,
        fn: Callable[[sql.Conn], Awaitable[T]],
        *,
        transaction: bool,
        pipeline: bool = False,
    ) -> T:
        """``fn(connection)``, in a transaction and in pipeline mode when asked; races and a
        connection that broke (the database restarted) are retried, up to ``ATTEMPTS`` runs."""
        error: Exception | None = None
        reconnected = False
        for _attempt in range(ATTEMPTS):
            conn = None
            try:
                async with self._pool.connection() as conn:
                    if not transaction:
                        return await fn(conn)
                    if not pipeline:
                        async with conn.transaction():
                            return await fn(conn)
                    async with conn.pipeline(), conn.transaction():
                        return await fn(conn)
            except RETRY as exc:
                error = exc
            except psycopg.OperationalError as exc:
                if conn is None or not conn.broken or reconnected:
                    raise map_error(exc) from None
                error, reconnected = exc, True
                await self._pool.check()  # drop the other connections that broke with it
            except psycopg.Error as exc:
                raise map_error(exc) from None
        if isinstance(error, psycopg.Error):
            raise map_error(error)
        raise StoreError(f"a write kept racing with concurrent deletes ({ATTEMPTS} attempts)")

    async def put(self, key: SnapshotKey, body: bytes, snapshot: Snapshot) -> Stored:
        prepared = prepare(body, snapshot)
        try:
            return await self._run(
                lambda conn: sql.put(conn, key, prepared), transaction=True, pipeline=True
            )
        except sql.Unchanged as same:
            return same.stored

    async def get(self, key: SnapshotKey) -> bytes:
        return await self._run(lambda conn: sql.get(conn, key), transaction=False)

    async def list_runs(
        self,
        *,
        namespace: str | None = None,
        pattern: str = "*",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[RunInfo]:
        after = decode_cursor(cursor, str, str) if cursor else None
        rows = await self._run(
            lambda conn: sql.list_runs(conn, namespace, pattern, after, limit), transaction=False
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

    async def delete_snapshot(self, namespace: str, run: str, name: str) -> int:
        return await self._run(
            lambda conn: sql.delete_snapshot(conn, namespace, run, name), transaction=True
        )

    async def delete_run(self, namespace: str, run: str) -> int:
        return await self._run(lambda conn: sql.delete_run(conn, namespace, run), transaction=True)

    async def count_snapshots(self) -> int:
        return await self._run(sql.count_snapshots, transaction=False)

    async def check(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1"), transaction=False)

    async def close(self) -> None:
        await self._pool.close()
