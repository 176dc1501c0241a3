"""Storage backends behind the ``Store`` protocol, chosen by the database URL's scheme.

``sqlite:///path`` (or a plain path) opens the SQLite backend, ``postgresql://`` (or
``postgres://``) the PostgreSQL one, which needs the ``postgres`` extra. A backend registers
here by scheme; its module is imported only when a URL asks for it, so a driver that is not
installed costs nothing until it is used (and then raises ``MissingExtraError``). Either
backend may keep large state blobs in an S3 bucket: ``open_store(url, blobs="s3://...")``.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit, urlunsplit

from rngvault._errors import StoreError
from rngvault.server.storage.base import Store

# scheme -> "module:coroutine function (url) -> Store"
BACKENDS = {
    "sqlite": "rngvault.server.storage.sqlite:SQLiteStore.open",
    "postgresql": "rngvault.server.storage.postgres:PostgresStore.open",
    "postgres": "rngvault.server.storage.postgres:PostgresStore.open",
}


def scheme_of(url: str) -> str:
    """The URL's scheme; a plain file path is SQLite."""
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else "sqlite"


def location(url: str) -> str:
    """Where ``url``'s data lives, for logs: an SQLite file's absolute path (a relative
    ``sqlite:///x.db`` or plain ``x.db`` is relative to the working directory), else the
    URL without its password."""
    if scheme_of(url) != "sqlite":
        return redact(url)
    from rngvault.server.storage.sqlite import parse_url

    return f"SQLite {parse_url(url)[0].resolve()}"


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url) if "://" in url else None
    if parts is None or parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, *parts[2:]))


async def open_store(url: str, *, blobs: str | None = None) -> Store:
    """Open the store ``url`` names (migrating its schema first).

    ``blobs`` (``s3://BUCKET/PREFIX``, the endpoint and credentials from the ``AWS_*``
    environment) keeps large whole states in that bucket, and only their digests in the
    database; without it every state stays in the database.
    """
    scheme = scheme_of(url)
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise StoreError(f"no storage backend for {scheme}:// URLs (supported: {known})")
    module_name, _, attribute = target.partition(":")
    opener: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        opener = getattr(opener, part)
    if blobs is None:
        store: Store = await opener(url)  # type: ignore[operator]
    else:
        store = await opener(url, blobs=blobs)  # type: ignore[operator]
    return store
