"""State blobs in an S3-compatible object store, keyed by their SHA-256.

A backend configured with ``--blobs s3://BUCKET/PREFIX`` keeps each whole state blob as the
object ``PREFIX/HEX[:2]/HEX`` (``HEX``: the blob's SHA-256 in hex; without a prefix,
``HEX[:2]/HEX``) and only its digest in the database. ``S3Blobs`` is that bucket: sync
methods for the SQLite writer thread, async ones for the event loop (the PostgreSQL backend,
GETs, the health check). It talks to AWS S3, SeaweedFS, MinIO, Ceph RGW or GCS's S3 API
through obstore, configured from the usual environment: ``AWS_ENDPOINT_URL`` (plain
``http://`` is allowed, for a store on loopback), ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` (``us-east-1`` when unset).

``put`` always writes, even when the object exists: the bytes are the same (the key is their
digest), and the write renews the object's last-modified time. The backends upload only the
objects of rows they are about to make external, under a lock that their sweeps take too
(SQLite: the writer; PostgreSQL: an advisory lock), so a sweep never deletes an object a
row is about to refer to; the grace period covers uploads whose transaction has not begun
(``blobs move``) and crashes between an upload and its commit.

Every failure is a ``BlobError`` naming the blob (its hex digest) and the bucket's URL and
saying what happened (``reason``: missing, corrupt, unreachable, refused or failed); obstore's
exceptions never leave this module. obstore is the ``s3`` extra: this module imports without
it, and ``S3Blobs`` raises ``MissingExtraError`` when it is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from rngvault._errors import MissingExtraError, RngVaultError, StoreError

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = [
    "BLOB_MIN",
    "GRACE",
    "BlobDigestError",
    "BlobError",
    "BlobsUrlError",
    "S3Blobs",
    "blob_key",
    "parse_blobs_url",
]

BLOB_MIN = 1024
"""Bytes a whole state row's data must have, at least, to be kept in the blob store (smaller
rows, and deltas, stay in the database)."""
GRACE = 3600.0
"""Seconds an object stays in the blob store, at least, after its last put, even when no
state refers to it: a sweep never deletes an object a put in flight is about to refer to."""
DEFAULT_REGION = "us-east-1"
CONCURRENCY = 16  # objects get_many fetches at once
DOWN_FOR = 2.0  # seconds requests fail at once after one found the store unreachable
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rule
_SEGMENT = re.compile(r"[A-Za-z0-9._=-]+")
_KEY = re.compile(r"([0-9a-f]{2})/([0-9a-f]{64})")  # a blob's key below the prefix

Reason = Literal["missing", "corrupt", "unreachable", "refused", "failed"]


class BlobsUrlError(StoreError, ValueError):
    """A blobs URL is not ``s3://BUCKET`` or ``s3://BUCKET/PREFIX``; the message says why."""


class BlobDigestError(RngVaultError, ValueError):
    """A blob digest is not 32 bytes, or does not match the blob's bytes (no request made)."""


class BlobError(StoreError):
    """The object store could not keep, return or list a blob.

    Attributes:
        url: the bucket's ``s3://`` URL.
        digest: the blob's SHA-256 in hex, or None for an operation on no one blob.
        reason: ``missing`` (no such object), ``corrupt`` (its bytes hash to another
            digest), ``unreachable`` (no answer, or a timeout), ``refused`` (the store
            refused the credentials) or ``failed`` (the store answered with another error).
    """

    def __init__(self, message: str, *, url: str, digest: str | None, reason: Reason) -> None:
        super().__init__(message)
        self.url = url
        self.digest = digest
        self.reason = reason


def parse_blobs_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://BUCKET/PREFIX`` (prefix ``""`` when there is none).

    Raises:
        BlobsUrlError: not an ``s3://`` URL, a bucket name S3 refuses, or a prefix with
            empty, ``.``/``..`` or unusual segments, a query, a port or credentials.
    """
    if not isinstance(url, str):
        raise BlobsUrlError(f"a blobs URL must be a string like s3://BUCKET/PREFIX, not {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "s3":
        raise BlobsUrlError(
            f"blobs URL {url!r}: only s3:// URLs are supported (s3://BUCKET or "
            "s3://BUCKET/PREFIX; the endpoint comes from AWS_ENDPOINT_URL)"
        )
    if "?" in rest or "#" in rest:
        raise BlobsUrlError(f"blobs URL {url!r}: a query or fragment is not allowed")
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise BlobsUrlError(
            f"blobs URL {url!r}: {bucket!r} is not a bucket name (credentials come from "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the endpoint from AWS_ENDPOINT_URL)"
        )
    if not bucket:
        raise BlobsUrlError(f"blobs URL {url!r} names no bucket: use s3://BUCKET/PREFIX")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise BlobsUrlError(
            f"blobs URL {url!r}: bucket {bucket!r} is not a valid S3 bucket name (3 to 63 "
            "lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        )
    prefix = prefix.removesuffix("/")
    if prefix:
        for segment in prefix.split("/"):
            if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
                raise BlobsUrlError(
                    f"blobs URL {url!r}: prefix segment {segment!r} is not allowed (use "
                    "letters, digits, '.', '_', '=' and '-', separated by single '/')"
                )
    return bucket, prefix


def _digest(digest: bytes) -> bytes:
    if not isinstance(digest, bytes | bytearray | memoryview) or len(digest) != 32:
        shown = repr(digest)[:80]
        raise BlobDigestError(f"a blob digest is 32 bytes (SHA-256), not {shown}")
    return bytes(digest)


def _hex(digest: bytes) -> str:
    return _digest(digest).hex()


def blob_key(digest: bytes) -> str:
    """The object key of a blob below the bucket's prefix: ``HEX[:2]/HEX``."""
    hexed = _hex(digest)
    return f"{hexed[:2]}/{hexed}"


def _summary(exc: BaseException) -> str:
    """obstore's message, shortened to its first line and the store's error code."""
    text = str(exc).split("\n\nDebug source", 1)[0]
    code = re.search(r"<Code>([^<]*)</Code>", text)
    detail = re.search(r"<Message>([^<]*)</Message>", text)
    first = text.split(": <?xml", 1)[0].split("\n", 1)[0].strip()
    if code:
        first += f" ({code.group(1)}{': ' + detail.group(1) if detail else ''})"
    return first


class S3Blobs:
    """Content-addressed blobs in one S3 bucket, below one prefix.

    Attributes:
        url: the bucket's URL, ``s3://BUCKET/PREFIX`` as given (for messages and logs).
        bucket: the bucket's name.
        prefix: the key prefix (``""`` for the bucket's root).
        endpoint: the endpoint requests go to (None: AWS's own).
    """

    def __init__(
        self,
        url: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 4.0,
        connect_timeout: float = 2.0,
        retries: int = 1,
    ) -> None:
        """Configure (no request yet) the bucket ``url`` names.

        Args:
            url: ``s3://BUCKET`` or ``s3://BUCKET/PREFIX``.
            env: where to read the ``AWS_*`` variables (default ``os.environ``).
            timeout: seconds one request may take, from connecting to the last byte.
            connect_timeout: seconds to connect.
            retries: retries of a failed request (network errors, 5xx), with backoff; a
                request and its retries together stop after ``timeout * (retries + 1)``.

        The defaults keep a request to a store that does not answer within 8 s, under a
        client's 10 s timeout, so that it is answered 503; and once one request found the
        store unreachable, requests in the next ``DOWN_FOR`` seconds fail at once instead of
        each waiting out its timeout (a server's writer would queue behind them).

        Raises:
            BlobsUrlError: a bad URL.
            MissingExtraError: obstore is not installed (``pip install 'rngvault[s3]'``).
        """
        self.bucket, self.prefix = parse_blobs_url(url)
        self.url = url
        try:
            import obstore
            from obstore.store import S3Store
        except ImportError:
            raise MissingExtraError("obstore", "s3", "keeping blobs in S3 (--blobs)") from None
        self._obs: Any = obstore
        self._down_until = 0.0  # monotonic time until which the store counts as unreachable
        source = os.environ if env is None else env
        self.endpoint = source.get("AWS_ENDPOINT_URL") or None
        config: dict[str, Any] = {"region": source.get("AWS_REGION") or DEFAULT_REGION}
        if self.endpoint:
            config["endpoint"] = self.endpoint
        for name, key in (("AWS_ACCESS_KEY_ID", "access_key_id"),
                          ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
                          ("AWS_SESSION_TOKEN", "token")):  # fmt: skip
            if source.get(name):
                config[key] = source[name]
        self._where = self.endpoint or "AWS S3"
        try:
            self._store: S3Store = S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=config,  # type: ignore[arg-type]
                client_options={
                    "allow_http": bool(self.endpoint and self.endpoint.startswith("http://")),
                    "timeout": dt.timedelta(seconds=timeout),
                    "connect_timeout": dt.timedelta(seconds=connect_timeout),
                },
                retry_config={
                    "max_retries": retries,
                    "retry_timeout": dt.timedelta(seconds=timeout * (retries + 1)),
                },
            )
        except Exception as exc:  # obstore's configuration errors, whatever their type
            raise BlobsUrlError(f"blobs {url!r} at {self._where}: {_summary(exc)}") from None

    def __repr__(self) -> str:
        return f"S3Blobs({self.url!r}, endpoint={self._where!r})"

    # -- errors: obstore's exceptions are translated here, and only here

    @contextlib.contextmanager
    def _translated(self, doing: str, digest: str | None) -> Iterator[None]:
        if time.monotonic() < self._down_until:
            what = f"blob {digest}" if digest else "the blobs"
            raise BlobError(
                f"{doing} {what}: {self.url} at {self._where} cannot be reached (it did not "
                f"answer a request less than {DOWN_FOR:g} s ago)",
                url=self.url,
                digest=digest,
                reason="unreachable",
            )
        try:
            yield
        except RngVaultError:
            raise
        except Exception as exc:
            error = self._error(exc, doing, digest)
            if error.reason == "unreachable":
                self._down_until = time.monotonic() + DOWN_FOR
            raise error from None

    def _error(self, exc: BaseException, doing: str, digest: str | None) -> BlobError:
        from obstore import exceptions as obx

        what = f"blob {digest}" if digest else "the blobs"
        where = f"{self.url} at {self._where}"
        summary = _summary(exc)
        reason: Reason
        if isinstance(exc, FileNotFoundError | obx.NotFoundError):
            reason, text = "missing", f"{what} is missing from {where}"
        elif isinstance(exc, obx.PermissionDeniedError | obx.UnauthenticatedError) or re.search(
            r"\b40[13] (Unauthorized|Forbidden)\b", summary
        ):
            reason = "refused"
            text = (
                f"{doing} {what}: {where} refused the credentials (AWS_ACCESS_KEY_ID, "
                f"AWS_SECRET_ACCESS_KEY): {summary}"
            )
        elif re.search(r"error sending request|timed? ?out|connect|dns", summary, re.I):
            reason, text = "unreachable", f"{doing} {what}: {where} cannot be reached: {summary}"
        else:
            reason, text = "failed", f"{doing} {what} in {where} failed: {summary}"
        return BlobError(text, url=self.url, digest=digest, reason=reason)

    def _checked(self, digest: bytes, data: bytes) -> bytes:
        if hashlib.sha256(data).digest() != bytes(digest):
            raise BlobError(
                f"blob {digest.hex()} in {self.url} at {self._where} is corrupt: its "
                f"{len(data)} bytes hash to {hashlib.sha256(data).hexdigest()}",
                url=self.url,
                digest=bytes(digest).hex(),
                reason="corrupt",
            )
        return data

    def _for_put(self, digest: bytes, data: bytes) -> str:
        key = blob_key(digest)
        if hashlib.sha256(data).digest() != bytes(digest):
            raise BlobDigestError(
                f"blob {bytes(digest).hex()}: its {len(data)} bytes hash to "
                f"{hashlib.sha256(data).hexdigest()}, not to its digest"
            )
        return key

    # -- puts

    def put(self, digest: bytes, data: bytes) -> None:
        """Store ``data`` under its SHA-256 ``digest`` (idempotent; renews its modified time).

        Blocks until the store has it; call it from a worker thread, never the event loop.

        Raises:
            BlobDigestError: ``digest`` is not 32 bytes or not ``data``'s SHA-256.
            BlobError: the store did not take it.
        """
        key = self._for_put(digest, data)
        with self._translated("storing", digest.hex()):
            self._obs.put(self._store, key, data)

    async def put_async(self, digest: bytes, data: bytes) -> None:
        """``put`` for the event loop."""
        key = self._for_put(digest, data)
        with self._translated("storing", digest.hex()):
            await self._obs.put_async(self._store, key, data)

    # -- gets

    def get(self, digest: bytes) -> bytes:
        """The blob's bytes, checked against its digest. Blocks: not for the event loop.

        Raises:
            BlobDigestError: ``digest`` is not 32 bytes.
            BlobError: missing, corrupt, or the store could not be read.
        """
        key = blob_key(digest)
        with self._translated("reading", digest.hex()):
            data = bytes(self._obs.get(self._store, key).bytes())
        return self._checked(digest, data)

    async def get_async(self, digest: bytes) -> bytes:
        """``get`` for the event loop."""
        key = blob_key(digest)
        with self._translated("reading", digest.hex()):
            result = await self._obs.get_async(self._store, key)
            data = bytes(await result.bytes_async())
        return self._checked(digest, data)

    async def get_many(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        """Each distinct digest's bytes, fetched concurrently (at most ``CONCURRENCY`` at once).

        The first failure cancels the fetches still running and is raised.

        Raises:
            BlobDigestError: a digest is not 32 bytes (before any request).
            BlobError: a blob is missing, corrupt, or could not be read.
        """
        wanted = list(dict.fromkeys(_digest(d) for d in digests))
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(digest: bytes) -> bytes:
            async with gate:
                return await self.get_async(digest)

        tasks = [asyncio.ensure_future(one(digest)) for digest in wanted]
        try:
            found = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return dict(zip(wanted, found, strict=True))

    # -- deletes

    def delete(self, digests: Iterable[bytes]) -> None:
        """Delete these blobs (absent ones are no error). Blocks: not for the event loop."""
        keys = [blob_key(d) for d in digests]
        if keys:
            with self._translated("deleting", None):
                self._obs.delete(self._store, keys)

    async def delete_async(self, digests: Iterable[bytes]) -> None:
        """``delete`` for the event loop."""
        keys = [blob_key(d) for d in digests]
        if keys:
            with self._translated("deleting", None):
                await self._obs.delete_async(self._store, keys)

    # -- listing, for gc

    def _older(
        self, chunk: Sequence[Mapping[str, Any]], before: dt.datetime
    ) -> Iterator[tuple[bytes, dt.datetime]]:
        for meta in chunk:
            match = _KEY.fullmatch(str(meta["path"]))
            if match is None or not match.group(2).startswith(match.group(1)):
                continue  # not a blob's key: left alone
            modified: dt.datetime = meta["last_modified"]
            if modified <= before:
                yield bytes.fromhex(match.group(2)), modified

    def list_older(self, seconds: float) -> Iterator[tuple[bytes, dt.datetime]]:
        """``(digest, last modified)`` of every blob below the prefix last modified at least
        ``seconds`` ago (by this machine's clock against the store's), in the store's order.
        Objects whose keys are not blob keys are skipped. Blocks: not for the event loop.

        Raises:
            BlobError: the store could not be listed.
        """
        before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
        with self._translated("listing", None):
            for chunk in self._obs.list(self._store):
                yield from self._older(chunk, before)

    async def list_older_async(self, seconds: float) -> AsyncIterator[tuple[bytes, dt.datetime]]:
        """``list_older`` for the event loop."""
        before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
        with self._translated("listing", None):
            async for chunk in self._obs.list(self._store):
                for found in self._older(chunk, before):
                    yield found

    # -- health

    async def check(self) -> None:
        """Return once the store answers a signed listing of the prefix's top level.

        Raises:
            BlobError: unreachable, timed out, or it refused the credentials.
        """
        with self._translated("listing", None):
            await self._obs.list_with_delimiter_async(self._store)
