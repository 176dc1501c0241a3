"""The HTTP store: an rngvault server, through httpx, with a spool for when it is away.

``put`` never loses a snapshot it was handed: it reaches the server, or it is written to
the spool (``rngvault.stores.spool``) and retried with exponential backoff and jitter.
While the server is known to be away, new snapshots go straight to the spool without
waiting for another timeout. A spooled snapshot the server fails to take while its
``/healthz`` answers (a 5xx for that snapshot alone) is retried ``MAX_ATTEMPTS`` times, then
set aside in the spool's ``failed/`` folder: it never blocks the others. A snapshot refused
for its token (401/403) waits in ``refused/`` until ``spool.retry`` sends it with a token
that works; one refused for itself (409, another 4xx) in ``conflicts/``. A 409 for a name
that holds the same snapshot (``rngvault._identity.same_snapshot``: an older server compares
bytes) counts as already stored. Fetched snapshots
are cached on disk by digest, once their digest is checked. Names are checked before they
become URLs, and listings before they become ``SnapshotInfo``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack

from rngvault._config import client_config
from rngvault._errors import (
    AuthError,
    ConflictError,
    DecodeError,
    NotFoundError,
    RecordError,
    RngVaultError,
    SpoolWarning,
    StoreError,
    TransportError,
    warn,
)
from rngvault._format import decode
from rngvault._identity import same_snapshot
from rngvault._names import NAME_RULE, check_generator_name, check_name, split_run
from rngvault._record import check_record, record_json
from rngvault._snapshot import Snapshot
from rngvault.stores._transport import CAUGHT, from_httpx, from_response, require_httpx
from rngvault.stores.base import SnapshotInfo, StepEntry
from rngvault.stores.local import _write_temp
from rngvault.stores.spool import Spool, SpoolEntry

MSGPACK = "application/msgpack"
_STORES: weakref.WeakSet[HttpStore] = weakref.WeakSet()
# Retry jitter from a generator of rngvault's own: never the ``random`` module's, whose
# stream belongs to the user's run (a retry thread drawing from it would move their
# generator).
_JITTER = random.Random()
MAX_BACKOFF = 60.0
# Answers that say the server as a whole cannot take snapshots now (rate limit, storage
# full): a spooled snapshot is not blamed for them.
SERVER_WIDE = frozenset({429, 507})
_INTEGER = re.compile(r"-?[0-9]{1,400}")
PAGE = 1000  # listing items asked for per request
STEP_PAGE = 10_000  # steps listed per request (the server's largest page)
_NAME = re.compile(NAME_RULE)
_SHA256 = re.compile("[0-9a-f]{64}")
HEALTH_TIMEOUT = 2.0  # seconds for the /healthz probe after a failed spooled upload
BATCH_ITEMS = 256  # snapshots per batch request at most (the server's bound)
BATCH_BYTES = 8 * 2**20  # snapshot bytes per batch request at most (one larger goes alone)
PutItem = tuple[str, str, bytes, Snapshot]
"""``put``'s arguments: (run, name, encoded snapshot, the snapshot)."""


class HttpStore:
    """Snapshots on an rngvault server (``http://host:8000``).

    ``token`` defaults to ``$RNGVAULT_TOKEN``; ``timeout`` (seconds, default
    ``$RNGVAULT_TIMEOUT`` or 10) bounds every request; ``cache`` (default: the cache
    directory, ``rngvault._config``) keeps fetched snapshots; ``transport`` replaces httpx's
    network transport (tests).
    """

    batch_linger = 0.25
    """Seconds a Vault's writer waits for more snapshots to send in one batch request
    (snapshots taken with ``durable=True``, and ``flush()``, do not wait)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        spool: Spool | None = None,
        transport: Any = None,
        cache: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.location = self.url
        config = client_config()
        self._token = token if token is not None else config.token
        self._timeout = timeout if timeout is not None else config.timeout
        self._transport = transport
        self.spool = spool if spool is not None else Spool(self.url)
        self.cache = cache or config.cache_dir
        self._lock = threading.RLock()
        self._failures = 0
        self._retry_at = 0.0
        self._away = False
        self._client_pid = -1
        self._client: Any = None
        self._retrier: threading.Thread | None = None
        self._closed = False
        self._batches = True  # False once the server answered that it has no batch route
        _STORES.add(self)
        if self._pending():
            self._schedule_retry()  # a previous process left snapshots for this server

    def _after_fork(self) -> None:
        """In a forked child: a lock, a retry state and connections of its own (the
        parent's lock may have been held by one of its threads at the fork)."""
        self._lock = threading.RLock()
        self._retrier = None
        self._failures = 0
        self._retry_at = 0.0
        self._away = False
        self._client = None
        self._client_pid = -1

    def __repr__(self) -> str:
        return f"HttpStore({self.url!r})"

    # -- requests -------------------------------------------------------------------------

    def _http(self) -> Any:
        stale = self._client is None or self._client.is_closed
        if stale or self._client_pid != os.getpid():  # never share a pool across fork
            httpx = require_httpx()
            headers = {"User-Agent": "rngvault"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._client = httpx.Client(
                base_url=self.url,
                headers=headers,
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
                transport=self._transport,
            )
            self._client_pid = os.getpid()
            # Close the connections when the store is collected; not at interpreter exit,
            # where the writer's exit flush may still need them.
            weakref.finalize(self, self._client.close).atexit = False
        return self._client

    def _exchange(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request and its answer, whatever its status; TransportError when none came."""
        try:
            return self._http().request(method, path, **kwargs)
        except CAUGHT as exc:
            raise from_httpx(exc, self.url) from exc

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; rngvault errors for failures, the server's words included."""
        response = self._exchange(method, path, **kwargs)
        if response.status_code >= 400:
            raise from_response(response)
        return response

    @staticmethod
    def _path(run: str, name: str | None = None) -> str:
        """The URL path of a run's snapshots, or of one; every part checked first, so that
        no name can reach another route ("../x")."""
        namespace, run_name = split_run(run)
        path = f"/v1/runs/{quote(namespace)}/{quote(run_name)}/snapshots"
        return path if name is None else f"{path}/{quote(check_name(name))}"

    def _json(self, path: str, **params: Any) -> dict[str, Any]:
        """A JSON object answered for ``GET path``; StoreError if the answer is not one."""
        response = self.request("GET", path, params=params)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise StoreError(f"{self.url}{path} answered something that is not a JSON object")
        return body

    # -- writing, with the spool ----------------------------------------------------------

    def put(self, run: str, name: str, data: bytes, snapshot: Snapshot) -> bool:
        rank = snapshot.metadata.rank
        with self._lock:
            due = time.monotonic() >= self._retry_at
            if self._away and not due:
                self._spool(run, name, rank, data, "is away (retrying later)")
                return True
            if due and self._pending():
                self._drain()
                if self._away:
                    self._spool(run, name, rank, data, "is still away")
                    return True
            try:
                created = self._send(run, name, rank, data)
            except TransportError as exc:
                self._backoff(away=True)
                self._spool(run, name, rank, data, f"did not take it ({exc})")
                return True
            except RngVaultError as exc:
                error = self._keep_refused(run, name, rank, data, snapshot, exc)
                if error is None:
                    return False
                if error is exc:
                    raise
                raise error from None
            if not len(self.spool):
                self._failures = 0
            return created

    def _keep_refused(
        self, run: str, name: str, rank: int, data: bytes, snapshot: Snapshot, exc: RngVaultError
    ) -> RngVaultError | None:
        """Keep a snapshot the server refused (not for being away) in the spool: for the
        token in ``refused/`` until one that works is given, for itself (409, 413...) in
        ``conflicts/`` for the user. Returns the error to raise, or None for a 409 of a name
        that holds the same snapshot (already stored)."""
        if isinstance(exc, AuthError):
            self.spool.add(run, name, rank, data, bucket="refused", error=str(exc))
            # Worded per run, not per snapshot: a warning per distinct failure, not per put.
            why = str(exc).partition(" -> ")[2] or str(exc)
            return AuthError(
                f"PUT {self.url}/v1/runs/{run}/snapshots -> {why}; {self._refused_hint()}"
            )
        if isinstance(exc, ConflictError) and self._holds_same(run, name, rank, snapshot):
            return None
        self.spool.add(run, name, rank, data, conflict=True)
        return exc

    def put_many(self, items: Sequence[PutItem]) -> list[bool | RngVaultError]:
        """``put`` for each item, in batch requests (``POST .../batch``: by run, at most
        ``BATCH_ITEMS`` items and about ``BATCH_BYTES`` a request); one result per item, in
        order: True stored (or spooled, as ``put`` returns), False already stored, or the
        error ``put`` would have raised for it. Each item is kept exactly as ``put`` keeps
        it: when the server is away or fails, in the spool; refused, in the spool's
        ``refused/`` or ``conflicts/``; so on return each one is on the server or on disk.
        A server without the batch route (an older rngvault) gets one ``put`` per item."""
        results: list[bool | RngVaultError | None] = [None] * len(items)
        with self._lock:
            for group in _batches(items):
                self._put_batch(items, group, results)
        done = [result for result in results if result is not None]
        assert len(done) == len(items)  # every item has its result
        return done

    def _put_batch(
        self,
        items: Sequence[PutItem],
        group: list[int],
        results: list[bool | RngVaultError | None],
    ) -> None:
        """Send the items ``group`` indexes (one run's), setting their ``results``."""
        due = time.monotonic() >= self._retry_at
        if self._away and not due:
            return self._spool_all(items, group, results, "is away (retrying later)")
        if due and self._pending():
            self._drain()
            if self._away:
                return self._spool_all(items, group, results, "is still away")
        if not self._batches or len(group) == 1:
            return self._put_each(items, group, results)
        run = items[group[0]][0]
        try:
            namespace, run_name = split_run(run)
            body = msgpack.packb([[items[i][1], items[i][2]] for i in group])
            response = self._exchange(
                "POST",
                f"/v1/runs/{quote(namespace)}/{quote(run_name)}/batch",
                content=body,
                headers={"Content-Type": MSGPACK},
            )
        except TransportError as exc:
            self._backoff(away=True)
            return self._spool_all(items, group, results, f"did not take it ({exc})")
        except RngVaultError:  # a run name no URL can hold: put says so for each
            return self._put_each(items, group, results)
        status = response.status_code
        if status in (404, 405):  # an rngvault without the batch route
            self._batches = False
            return self._put_each(items, group, results)
        if status == 413:  # a server with a lower limit: smaller batches
            half = len(group) // 2
            self._put_batch(items, group[:half], results)
            return self._put_batch(items, group[half:], results)
        if status >= 400:
            error = from_response(response)
            if isinstance(error, TransportError):
                self._backoff(away=True)
                return self._spool_all(items, group, results, f"did not take it ({error})")
            if isinstance(error, AuthError):
                return self._settle(items, group, results, [error] * len(group))
            return self._put_each(items, group, results)  # put's answer for each one
        answers = self._batch_results(response, items, group)
        if answers is None:  # not a batch answer: put (safe to repeat) for each one
            return self._put_each(items, group, results)
        self._settle(items, group, results, answers)
        if not len(self.spool):
            self._failures = 0
        return None

    def _batch_results(
        self, response: Any, items: Sequence[PutItem], group: list[int]
    ) -> list[bool | RngVaultError] | None:
        """Each item's outcome in a batch answer, as ``put`` would see its own answer:
        True (201), False (200), or the error of that status and body; None when the
        answer is not a result per item, in order."""
        try:
            answers = response.json().get("results")
        except (ValueError, AttributeError):
            return None
        if not isinstance(answers, list) or len(answers) != len(group):
            return None
        httpx = require_httpx()
        outcomes: list[bool | RngVaultError] = []
        for i, answer in zip(group, answers, strict=True):
            run, name, _data, snapshot = items[i]
            status = answer.get("status") if isinstance(answer, dict) else None
            if type(status) is not int or answer.get("name") != name:
                return None
            if status in (200, 201):
                outcomes.append(status == 201)
                continue
            try:
                path = self._path(run, name)
            except RngVaultError as exc:
                outcomes.append(exc)
                continue
            request = httpx.Request(
                "PUT", f"{self.url}{path}", params={"rank": snapshot.metadata.rank}
            )
            said = {"error": answer.get("error"), "detail": answer.get("detail")}
            outcomes.append(from_response(httpx.Response(status, json=said, request=request)))
        return outcomes

    def _settle(
        self,
        items: Sequence[PutItem],
        group: list[int],
        results: list[bool | RngVaultError | None],
        answers: Sequence[bool | RngVaultError],
    ) -> None:
        """Each item's result from the server's answer for it, kept as ``put`` keeps it."""
        for i, answer in zip(group, answers, strict=True):
            run, name, data, snapshot = items[i]
            rank = snapshot.metadata.rank
            try:
                if isinstance(answer, bool):
                    results[i] = answer
                elif isinstance(answer, TransportError):  # this one failed: as put spools it
                    self._backoff(away=True)
                    self._spool(run, name, rank, data, f"did not take it ({answer})")
                    results[i] = True
                else:
                    error = self._keep_refused(run, name, rank, data, snapshot, answer)
                    results[i] = False if error is None else error
            except RngVaultError as exc:  # the spool is full: as put raises it
                results[i] = exc

    def _put_each(
        self,
        items: Sequence[PutItem],
        group: list[int],
        results: list[bool | RngVaultError | None],
    ) -> None:
        for i in group:
            try:
                results[i] = self.put(*items[i])
            except RngVaultError as exc:
                results[i] = exc

    def _spool_all(
        self,
        items: Sequence[PutItem],
        group: list[int],
        results: list[bool | RngVaultError | None],
        why: str,
    ) -> None:
        for i in group:
            run, name, data, snapshot = items[i]
            try:
                self._spool(run, name, snapshot.metadata.rank, data, why)
                results[i] = True
            except RngVaultError as exc:  # the spool is full: as put raises it
                results[i] = exc

    def _refused_hint(self) -> str:
        return (
            f"snapshots wait in {self.spool.refused}: set RNGVAULT_TOKEN or pass "
            f"token=... (a token that may write there), then run "
            f"`rngvault --url {self.url} spool retry`"
        )

    def _holds_same(self, run: str, name: str, rank: int, snapshot: Snapshot | bytes) -> bool:
        """Whether the server's ``run/name`` (``rank``) is the same snapshot as ``snapshot``
        (``same_snapshot``), for a 409 from a server that compares bytes; False when that
        cannot be told."""
        try:
            mine = decode(snapshot) if isinstance(snapshot, bytes) else snapshot
            return same_snapshot(decode(self.get(run, name, rank)), mine)
        except RngVaultError:
            return False

    def _upload(self, run: str, name: str, rank: int, data: bytes) -> Any:
        """PUT one snapshot; the answer, whatever its status."""
        return self._exchange(
            "PUT",
            self._path(run, name),
            params={"rank": rank},
            content=data,
            headers={"Content-Type": MSGPACK},
        )

    def _send(self, run: str, name: str, rank: int, data: bytes) -> bool:
        response = self._upload(run, name, rank, data)
        if response.status_code >= 400:
            raise from_response(response)
        return bool(response.status_code == 201)

    def _spool(self, run: str, name: str, rank: int, data: bytes, why: str) -> None:
        first = len(self.spool) == 0
        self.spool.add(run, name, rank, data)
        if first:
            warn(
                f"rngvault: {self.url} {why}: snapshots are kept in {self.spool.directory} "
                "and sent when it answers",
                SpoolWarning,
            )
        self._schedule_retry()

    def _backoff(self, *, away: bool) -> None:
        """Retry the spool later, each time later; ``away``: the server does not answer,
        so new snapshots go to the spool until then."""
        self._failures += 1
        self._away = away
        delay = min(MAX_BACKOFF, 0.25 * 2 ** min(self._failures, 10))
        self._retry_at = time.monotonic() + delay * _JITTER.uniform(0.5, 1.5)

    def _answers_health(self) -> bool:
        """Whether ``/healthz`` answers 200: the server and its storage work."""
        try:
            response = self._http().get("/healthz", timeout=min(self._timeout, HEALTH_TIMEOUT))
        except CAUGHT:
            return False
        return bool(response.status_code == 200)

    def _drain(self) -> int:
        """Send spooled snapshots, oldest first; returns how many are left.

        A snapshot the server refuses for its token (401/403) moves to ``refused/``, one it
        refuses for itself (409, 4xx) to ``conflicts/``. When an
        upload fails (5xx, timeout) while ``/healthz`` answers, the failure is the
        snapshot's: it is charged (``Spool.charge``; at ``MAX_ATTEMPTS`` it moves to
        ``failed/``) and the ones after it are sent. Otherwise the server is away: stop
        and back off. Both set-asides warn; neither blocks the snapshots after it."""
        if not self._drain_records() and not self._answers_health():
            self._backoff(away=True)
            return len(self.spool)
        entries = self.spool.entries()
        left = 0
        charged = False
        refused: list[SpoolEntry] = []
        for n, entry in enumerate(entries):
            try:
                response = self._upload(entry.run, entry.name, entry.rank, entry.data)
                error = from_response(response) if response.status_code >= 400 else None
                status = response.status_code
            except TransportError as exc:  # no answer
                error, status = exc, 0
            except RngVaultError as exc:  # a name no URL can hold
                error, status = exc, 400
            if error is None or (
                isinstance(error, ConflictError)
                and self._holds_same(entry.run, entry.name, entry.rank, entry.data)
            ):
                self.spool.remove(entry)
            elif isinstance(error, AuthError):
                self.spool.set_aside(entry, "refused", str(error))
                if not refused:
                    first_error = error
                refused.append(entry)
            elif not isinstance(error, TransportError):
                self._set_aside(entry, self.spool.set_aside(entry), "refused", error)
            elif status in SERVER_WIDE or not self._answers_health():
                self._warn_refused(refused, first_error if refused else None)
                self._backoff(away=True)
                return left + len(entries) - n
            else:
                charged = True
                where = self.spool.charge(entry, str(error))
                if where is None:
                    left += 1
                else:
                    self._set_aside(entry, where, "failed to take", error)
        self._warn_refused(refused, first_error if refused else None)
        self._away = False
        if charged:
            self._backoff(away=False)  # the charged ones again later, not at once
        else:
            self._failures = 0
            self._retry_at = 0.0
        return left

    def _warn_refused(self, refused: list[SpoolEntry], error: RngVaultError | None) -> None:
        """One warning for the spooled snapshots one pass moved to ``refused/``."""
        if refused and error is not None:
            warn(
                f"rngvault: {self.url} refused the token for {len(refused)} spooled "
                f"snapshot(s) ({error}); {self._refused_hint()}",
                SpoolWarning,
            )

    @staticmethod
    def _set_aside(entry: SpoolEntry, where: Path, what: str, error: RngVaultError) -> None:
        warn(
            f"rngvault: the server {what} spooled snapshot {entry.run}/{entry.name} "
            f"(rank {entry.rank}): {error}; it is kept in {where} for you to resolve",
            SpoolWarning,
        )

    def _schedule_retry(self) -> None:
        if self._retrier is not None and self._retrier.is_alive():
            return
        self._retrier = threading.Thread(
            target=self._retry_loop, name=f"rngvault-spool[{self.url}]", daemon=True
        )
        self._retrier.start()

    def _retry_loop(self) -> None:
        pid = os.getpid()
        while os.getpid() == pid and not self._closed and self._pending():
            time.sleep(min(1.0, max(0.05, self._retry_at - time.monotonic())))
            with self._lock:
                if not self._closed and time.monotonic() >= self._retry_at and self._pending():
                    try:
                        self._drain()
                    except (RngVaultError, OSError) as exc:  # keep retrying, say why once
                        self._backoff(away=True)
                        warnings.warn(f"rngvault: spool retry: {exc}", SpoolWarning, stacklevel=1)

    def flush(self) -> int:
        """Try to send everything in the spool now; returns how many are still held back:
        waiting, or refused for the token (``refused/``, sent by ``spool.retry``)."""
        with self._lock:
            left = 0
            if self._pending():
                self._retry_at = 0.0
                left = self._drain()
            return left + self.spool.count("refused")

    def check_access(self, namespace: str | None = None) -> str | None:
        """One read the token must be allowed (the first run of ``namespace``, or of any
        namespace): None when it works, else what is wrong and what to do. Never raises,
        and waits at most ``HEALTH_TIMEOUT`` seconds for a server that is away."""
        params: dict[str, Any] = {"limit": 1, **({"namespace": namespace} if namespace else {})}
        try:
            response = self._http().get(
                "/v1/runs", params=params, timeout=min(self._timeout, HEALTH_TIMEOUT)
            )
        except CAUGHT as exc:
            return (
                f"{self.url} does not answer ({from_httpx(exc, self.url)}): snapshots wait "
                f"in the spool ({self.spool.directory}) until it does; check the URL"
            )
        if response.status_code in (401, 403):
            which = "no token" if not self._token else "the token"
            return (
                f"{self.url} refused {which} ({from_response(response)}): set RNGVAULT_TOKEN "
                "or pass token=... (a token that may read and write this run); until then "
                f"snapshots wait in {self.spool.refused}"
            )
        if response.status_code >= 400:
            return f"{self.url} answered {from_response(response)}"
        return None

    def pending(self) -> list[SpoolEntry]:
        """What waits in the spool."""
        return self.spool.entries()

    # -- reading --------------------------------------------------------------------------

    def _cache_key(self, run: str, name: str, rank: int, digest: str) -> Path:
        key = hashlib.sha256(f"{self.url}\n{run}\n{name}\n{rank}\n{digest}".encode()).hexdigest()
        return self.cache / "index" / key[:2] / key

    def get(self, run: str, name: str, rank: int = 0, *, digest: str | None = None) -> bytes:
        """The stored bytes. With ``digest`` (the states digest a SnapshotRef names), a copy
        fetched before is served from the local cache; by name alone the server is always
        asked, so a name that was deleted and stored again is never served stale."""
        path = self._path(run, name)  # checked before anything else
        index = self._cache_key(run, name, rank, digest) if digest else None
        if index is not None and digest is not None:
            try:
                sha = index.read_text().strip()
                data = (self.cache / "snapshots" / sha[:2] / sha).read_bytes()
                if hashlib.sha256(data).hexdigest() == sha and _holds(data, digest):
                    return data
            except (OSError, ValueError):
                pass
        response = self.request("GET", path, params={"rank": rank}, headers={"Accept": MSGPACK})
        data = bytes(response.content)
        if index is not None and digest is not None and _holds(data, digest):
            self._cache(index, data)  # only what is the snapshot asked for
        return data

    def _cache(self, index: Path, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        try:  # a cache: no fsync, a torn file fails its digest check and is fetched again
            blob = self.cache / "snapshots" / digest[:2] / digest
            if not blob.exists():
                os.replace(_write_temp(blob.parent, data, durable=False), blob)
            os.replace(_write_temp(index.parent, digest.encode(), durable=False), index)
        except OSError:
            pass  # a cache that cannot be written is only slower

    def _pages(self, path: str, key: str, **params: Any) -> list[Any]:
        """Every item of a paged listing (``_iter_pages``)."""
        return [item for page in self._iter_pages(path, key, **params) for item in page]

    def _iter_pages(
        self, path: str, key: str, limit: int | None = None, size: int = PAGE, **params: Any
    ) -> Iterator[list[Any]]:
        """The pages of a paged listing as they come (at most ``limit`` items in all);
        StoreError for an answer of another shape or a cursor that does not move on."""
        cursor = None
        seen: set[str] = set()
        left = limit
        while left is None or left > 0:
            query = dict(
                params,
                limit=size if left is None else min(size, left),
                **({"cursor": cursor} if cursor else {}),
            )
            body = self._json(path, **query)
            page, cursor = body.get(key), body.get("next_cursor")
            if not isinstance(page, list):
                raise StoreError(f"{self.url}{path}: the answer has no list {key!r}")
            if left is not None:
                page = page[:left]
                left -= len(page)
            yield page
            if not cursor:
                return
            if not isinstance(cursor, str) or not page or cursor in seen:
                raise StoreError(f"{self.url}{path}: the listing's next_cursor does not move on")
            seen.add(cursor)

    def snapshots(self, run: str) -> list[SnapshotInfo]:
        return list(self.iter_snapshots(run))

    def iter_snapshots(self, run: str, limit: int | None = None) -> Iterator[SnapshotInfo]:
        """A run's snapshots (at most ``limit``), page by page as the server sends them: a
        listing of any length in the memory of one page. NotFoundError for no such run."""
        source = f"the listing of {self.url}"
        empty = True
        for page in self._iter_pages(self._path(run), "snapshots", limit=limit):
            for item in page:
                empty = False
                yield SnapshotInfo.from_dict(_listed(run, item), source=source)
        if empty:
            self._require_run(run)

    def steps(
        self,
        run: str,
        *,
        rank: int = 0,
        start: int | None = None,
        generator: str | None = None,
    ) -> Iterator[StepEntry]:
        """``rank``'s snapshots of ``run`` that recorded a step, by step, from ``start`` on
        (the server's ``/steps`` listing, ``STEP_PAGE`` a request, as the pages come);
        with ``generator``, each entry carries that generator's state hash. NotFoundError
        for no such run; StoreError for an answer that is not a steps listing."""
        if generator is not None:
            check_generator_name(generator)
        namespace, run_name = split_run(run)
        path = f"/v1/runs/{quote(namespace)}/{quote(run_name)}/steps"
        params: dict[str, Any] = {"rank": rank}
        if start is not None:
            params["start"] = start
        if generator is not None:
            params["generator"] = generator
        previous = start
        with_state = generator is not None
        name_ok, hex_ok = _NAME.fullmatch, _SHA256.fullmatch
        for page in self._iter_pages(path, "steps", size=STEP_PAGE, **params):
            for item in page:
                # The common case checked inline (100,000 entries a second matter to bisect);
                # anything else goes through _step_entry, which converts or says what is wrong.
                try:
                    step, name, digest, state = (
                        item["step"],
                        item["name"],
                        item["digest"],
                        item["state"],
                    )
                except (TypeError, KeyError):
                    step = name = digest = state = None
                if (
                    type(step) is int
                    and type(name) is str
                    and name_ok(name)
                    and type(digest) is str
                    and hex_ok(digest)
                    and (state is None or (with_state and type(state) is str and hex_ok(state)))
                ):
                    entry = StepEntry(step, name, digest, state)
                else:
                    entry = _step_entry(item, with_state, f"{self.url}{path}")
                if previous is not None and entry.step < previous:
                    raise StoreError(
                        f"{self.url}{path}: step {entry.step} ({entry.name!r}) is listed "
                        f"after step {previous}: the listing is not in step order"
                    )
                previous = entry.step
                yield entry

    # -- run records (spooled, one per run, while the server is away) -----------------------

    @staticmethod
    def _run_path(run: str) -> str:
        namespace, run_name = split_run(run)
        return f"/v1/runs/{quote(namespace)}/{quote(run_name)}"

    def _answered_record(self, record: Any, path: str) -> dict[str, Any]:
        """A record the server answered, checked as any record is (StoreError if not one;
        fields a newer version added are kept)."""
        try:
            return check_record(record, allow_unknown=True)
        except ValueError as exc:
            raise StoreError(
                f"{self.url}{path} answered a record that is not valid: {exc}"
            ) from None

    def put_record(self, run: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Keep ``record`` as the run's unless it has one (see the ``Store`` protocol);
        checked here first, so a bad record never leaves the process. For a server that does
        not answer, the record waits in the spool (one per run) and is sent before the
        snapshots when they are; then the record given is returned."""
        text = record_json(record)
        path = self._run_path(run) + "/record"
        with self._lock:
            away = self._away and time.monotonic() < self._retry_at
        if not away:
            try:
                response = self._send_record(run, text)
            except TransportError:
                away = True
        if away:  # kept with the snapshots, and sent before them when the server is back
            with self._lock:
                self.spool.add_record(run, text)
                self._schedule_retry()
            return check_record(json.loads(text))
        if response.status_code >= 400:
            error = from_response(response)
            raise RecordError(str(error)) if response.status_code == 422 else error
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "record" not in body:
            raise StoreError(f"{self.url}{path} answered something that is not a record")
        return self._answered_record(body["record"], path)

    def _send_record(self, run: str, text: str) -> Any:
        return self._exchange(
            "PUT",
            self._run_path(run) + "/record",
            content=text.encode(),
            headers={"Content-Type": "application/json"},
        )

    def _drain_records(self) -> bool:
        """Send the run records waiting in the spool; False if the server did not answer
        (the rest wait). A record the server refuses is dropped with a warning: the
        snapshots it came with are sent all the same."""
        for path, run, text in self.spool.waiting_records():
            try:
                response = self._send_record(run, text)
            except TransportError:
                return False
            if response.status_code >= 400 and response.status_code not in SERVER_WIDE:
                warn(
                    f"rngvault: {self.url} refused the spooled record of run {run}: "
                    f"{from_response(response)}; the run's snapshots are sent without it",
                    SpoolWarning,
                )
            elif response.status_code >= 400:
                return False
            with contextlib.suppress(OSError):
                path.unlink()
        return True

    def _pending(self) -> bool:
        """Whether anything waits in the spool: snapshots, or run records."""
        return bool(len(self.spool)) or bool(self.spool.waiting_records())

    def record(self, run: str) -> dict[str, Any]:
        path = self._run_path(run)
        body = self._json(path)
        if "record" not in body:
            raise StoreError(f"{self.url}{path} answered a run without a record field")
        return self._answered_record(body["record"], path)

    def _require_run(self, run: str) -> None:
        namespace, name = split_run(run)
        if f"{namespace}/{name}" not in self.runs(namespace):
            raise NotFoundError(f"no run {run!r} at {self.url}")

    def runs(self, namespace: str | None = None) -> list[str]:
        params = {"namespace": namespace} if namespace else {}
        runs = []
        for item in self._pages("/v1/runs", "runs", **params):
            if not isinstance(item, dict):
                raise StoreError(f"{self.url}/v1/runs: a run must be a map, not {item!r:.60}")
            runs.append("/".join(split_run(f"{item.get('namespace')}/{item.get('run')}")))
        return sorted(runs)

    def close(self) -> None:
        """Stop retrying (the spool stays on disk) and close connections."""
        self._closed = True
        if self._client is not None and self._client_pid == os.getpid():
            self._client.close()
        self._client = None


def _batches(items: Sequence[PutItem]) -> list[list[int]]:
    """The indexes of ``items`` in batches: one run's each, in order, within the bounds."""
    batches: list[list[int]] = []
    open_batch: dict[str, tuple[list[int], int]] = {}
    for i, (run, _name, data, _snapshot) in enumerate(items):
        batch, size = open_batch.get(run, ([], 0))
        if batch and (len(batch) >= BATCH_ITEMS or size + len(data) > BATCH_BYTES):
            batch, size = [], 0
        if not batch:
            batches.append(batch)
        batch.append(i)
        open_batch[run] = (batch, size + len(data))
    return batches


def _listed(run: str, item: Any) -> Any:
    """A listing item of the server's JSON rendering, back to SnapshotInfo's fields."""
    if not isinstance(item, dict):
        return item
    generators = item.get("generators", [])
    if isinstance(generators, list) and all(isinstance(g, dict) for g in generators):
        generators = {g.get("name"): g.get("family") for g in generators}
    ranks = item.get("ranks")
    if not (isinstance(ranks, list) and all(type(r) is int for r in ranks)):
        ranks = []
    return {
        "world_size": max(ranks, default=0) + 1,
        **item,
        **{k: _number(item.get(k)) for k in ("created", "step", "epoch")},
        "run": run,
        "generators": generators,
    }


def _step_entry(item: Any, with_state: bool, source: str) -> StepEntry:
    """A ``StepEntry`` from an item of the steps listing; StoreError naming what is wrong."""
    if not isinstance(item, dict):
        raise StoreError(f"{source}: a listed step must be a map, not {item!r:.60}")
    step, name = _number(item.get("step")), item.get("name")
    digest, state = item.get("digest"), item.get("state")
    if type(step) is not int:
        problem = f"step {step!r:.60} is not an integer"
    elif not isinstance(name, str) or not _NAME.fullmatch(name):
        problem = f"name {name!r:.60} is not a snapshot name"
    elif not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        problem = f"digest {digest!r:.80} is not a SHA-256 hex digest"
    elif state is not None and (not isinstance(state, str) or not _SHA256.fullmatch(state)):
        problem = f"state {state!r:.80} is not a SHA-256 hex digest or null"
    elif state is not None and not with_state:
        problem = "a state hash was sent though no generator was asked for"
    else:
        return StepEntry(step, name, digest, state)
    raise StoreError(f"{source}: listed step {item!r:.120}: {problem}")


def _number(value: Any) -> Any:
    """A number the server wrote as a string (big integers, NaN, infinities) as a number."""
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return float(value)
        if _INTEGER.fullmatch(value):
            return int(value)
    return value


def _holds(data: bytes, digest: str) -> bool:
    """Whether ``data`` is a valid snapshot whose states digest is ``digest``."""
    try:
        return decode(data).digest == digest
    except DecodeError:
        return False


def close_all() -> None:
    """Close every HTTP store's connections (at exit, after the writers' last flush)."""
    for store in list(_STORES):
        if store._client is not None and store._client_pid == os.getpid():
            store._client.close()


def _reset_after_fork() -> None:
    for store in list(_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
