"""Seed sensitivity in the server: the runs a pattern matches, read from the store, handed to
``rngvault._seeds.analyze`` (the numbers ``rngvault.seed_sensitivity`` gives).

Used by ``GET /v1/seeds`` and the page ``/ui/seeds``. Only runs in namespaces the token may
read take part; a pattern is ``NAMESPACE/RUN`` with shell-style wildcards (``*``, ``?``,
``[...]``) in either part, and may match at most ``MAX_RUNS`` runs.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
from collections.abc import Sequence
from typing import Any

from rngvault._errors import InvalidNameError, NotFoundError, StoreError
from rngvault._names import check_name
from rngvault._seeds import Observation, SeedReport, analyze, observe
from rngvault.server.storage.base import SnapshotInfo, Store

MAX_RUNS = 10_000
_PAGE = 1000
_CONCURRENT = 8  # runs read at once
_PART = re.compile(r"[A-Za-z0-9._\-*?\[\]!]{1,128}")
_WILD = re.compile(r"[*?\[]")


class PatternError(InvalidNameError):
    """A run pattern is not ``NAMESPACE/RUN`` with wildcards."""


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is ``NAMESPACE/RUN``, each part name characters and wildcards."""
    parts = pattern.split("/")
    if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
        raise PatternError(
            f"run pattern {pattern!r:.150} is not NAMESPACE/RUN with wildcards "
            "(letters, digits, '.', '_', '-', and * ? [...]), e.g. alice/resnet-*"
        )
    return pattern


async def _runs(store: Store, pattern: str, readable: Sequence[str]) -> list[tuple[str, str]]:
    namespace_part = pattern.split("/")[0]
    namespace = None if _WILD.search(namespace_part) else check_name(namespace_part, "namespace")
    found: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = await store.list_runs(
            namespace=namespace, pattern=tuple(readable), cursor=cursor, limit=_PAGE
        )
        for info in page.items:
            if fnmatch.fnmatchcase(f"{info.namespace}/{info.run}", pattern):
                found.append((info.namespace, info.run))
        if len(found) > MAX_RUNS:
            raise PatternError(
                f"run pattern {pattern!r} matches more than {MAX_RUNS} runs: narrow it"
            )
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def _snapshots(store: Store, namespace: str, run: str) -> list[SnapshotInfo]:
    listed: list[SnapshotInfo] = []
    cursor = None
    while True:
        page = await store.list_snapshots(namespace, run, cursor=cursor, limit=_PAGE)
        listed.extend(page.items)
        if page.next_cursor is None:
            return listed
        cursor = page.next_cursor


async def _observe(
    store: Store, namespace: str, run: str, at: str, gate: asyncio.Semaphore
) -> Observation:
    async with gate:
        try:
            _info, text = await store.run_info(namespace, run)
            snapshots = await _snapshots(store, namespace, run)
        except NotFoundError:  # deleted since it was listed
            return Observation(f"{namespace}/{run}", None, {}, {}, "deleted while reading")
    try:
        record: Any = json.loads(text)
    except ValueError:
        raise StoreError(f"the record of run {namespace}/{run} is not JSON") from None
    if not isinstance(record, dict):
        raise StoreError(f"the record of run {namespace}/{run} is not a JSON object")
    return observe(f"{namespace}/{run}", record, snapshots, at)


async def seed_report(
    store: Store,
    pattern: str,
    *,
    metric: str | None,
    at: str,
    readable: Sequence[str],
) -> SeedReport:
    """The seed sensitivity of the runs matching ``pattern`` in namespaces matching one of
    ``readable`` (the token's read grants). NotFoundError when none matches."""
    check_pattern(pattern)
    runs = await _runs(store, pattern, readable)
    if not runs:
        raise NotFoundError(f"no run matches {pattern!r} (among the runs this token may read)")
    gate = asyncio.Semaphore(_CONCURRENT)
    observations = await asyncio.gather(*(_observe(store, ns, r, at, gate) for ns, r in runs))
    return analyze(observations, pattern=pattern, metric=metric, at=at)
