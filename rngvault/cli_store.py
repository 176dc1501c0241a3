"""Store maintenance commands that act on the server's database directly: backup, gc
(retention) and vacuum. Like ``serve`` and ``token`` they run on the server's machine;
``gc`` also runs from anywhere through the server's admin route when ``--url`` is given."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rngvault._errors import RngVaultError

Subparsers = Any  # argparse's _SubParsersAction, private


def _settings(**given: Any) -> Any:
    from rngvault.server.settings import Settings

    return Settings.from_env(**given)


# -- backup ---------------------------------------------------------------------------------


def add_backup(sub: Subparsers) -> None:
    p = sub.add_parser("backup", help="copy a live SQLite store consistently")
    p.add_argument("--db", help="database URL (RNGVAULT_DB, default: data dir)")
    p.add_argument("file", type=Path, help="where to write the copy (must not exist)")
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the store with SQLite's online backup: consistent while the server runs."""
    from rngvault.server.storage import scheme_of
    from rngvault.server.storage.sqlite import backup

    url = _settings(db=args.db).db
    if scheme_of(url) != "sqlite":
        raise RngVaultError(f"backup copies SQLite stores; for {url.split('://')[0]} use pg_dump")
    if args.file.exists():
        raise RngVaultError(f"{args.file} exists: choose a new file for the backup")
    backup(url, args.file)
    print(f"backed up {url} to {args.file}", file=sys.stderr)
    return 0


# -- gc -------------------------------------------------------------------------------------

GC_TIMEOUT = 600.0  # seconds: a gc of a large store takes a while, in batches


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: write 0 or a positive number")
    return int(text)


def add_gc(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gc",
        help="delete old snapshots of the runs a pattern matches (retention)",
        description="In every run matching RUN-PATTERN, delete the snapshots that every given "
        "rule selects; runs left empty are removed, state blobs no snapshot uses are freed. "
        "Acts on the database (--db), or through the server's admin route with --url.",
    )
    p.add_argument(
        "pattern",
        metavar="RUN-PATTERN",
        help="runs as namespace/run, with * and ? (alice/resnet-*)",
    )
    p.add_argument(
        "--keep-last", type=_count, metavar="N", help="keep the N newest snapshots of each run"
    )
    p.add_argument(
        "--older-than",
        metavar="DURATION",
        help="delete snapshots stored over 30d, 12h, 90m, 2w ago",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    p.add_argument("--db", help="database URL (RNGVAULT_DB, default: data dir)")
    p.set_defaults(func=cmd_gc, usage=p.error)


def cmd_gc(args: argparse.Namespace) -> int:
    from rngvault.server.tokens import parse_duration

    if args.keep_last is None and args.older_than is None:
        args.usage("give --keep-last, --older-than or both")
    age = None
    if args.older_than is not None:
        try:
            age = parse_duration(args.older_than)
        except ValueError as exc:
            args.usage(f"--older-than: {exc}")
    request: dict[str, Any] = {"pattern": args.pattern, "dry_run": args.dry_run}
    if args.keep_last is not None:
        request["keep_last"] = args.keep_last
    if args.older_than is not None:
        request["older_than"] = args.older_than
    answer = (
        _gc_remote(args.url, args.token, request) if args.url else _gc_local(args, request, age)
    )
    verb = "would delete" if answer["dry_run"] else "deleted"
    for item in answer["sample"]:
        print(f"{verb} {item['namespace']}/{item['run']}/{item['name']}")
    more = answer["snapshots"] - len(answer["sample"])
    if more > 0:
        print(f"... and {more} more")
    print(
        f"{verb} {answer['snapshots']} snapshots ({answer['ranks']} ranks) in "
        f"{answer['runs']} matching runs; {answer['blobs']} state blobs freed",
        file=sys.stderr,
    )
    return 0


def _gc_local(args: argparse.Namespace, request: dict[str, Any], age: int | None) -> dict[str, Any]:
    from rngvault.server.schemas import RUN_PATTERN_RULE, GcBody
    from rngvault.server.storage import open_store

    if not re.fullmatch(RUN_PATTERN_RULE, args.pattern):
        args.usage(f"invalid RUN-PATTERN {args.pattern!r}: write namespace/run with * and ?")
    before = None if age is None else time.time() - age

    async def collect() -> dict[str, Any]:
        store = await open_store(_settings(db=args.db).db)
        try:
            collected = await store.collect(
                request["pattern"],
                keep_last=args.keep_last,
                stored_before=before,
                dry_run=args.dry_run,
            )
        finally:
            await store.close()
        return GcBody.of(collected, before).model_dump()

    return asyncio.run(collect())


def _gc_remote(url: str, token: str | None, request: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/admin/gc; the server's error, if any, as a one-line rngvault error."""
    from rngvault.stores._transport import CAUGHT, from_httpx, from_response, require_httpx

    httpx = require_httpx()
    headers = {"User-Agent": "rngvault"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(
            url.rstrip("/") + "/v1/admin/gc", json=request, headers=headers, timeout=GC_TIMEOUT
        )
    except CAUGHT as exc:
        raise from_httpx(exc, url) from exc
    if response.status_code >= 400:
        raise from_response(response)
    body: dict[str, Any] = response.json()
    return body


# -- vacuum ---------------------------------------------------------------------------------


def add_vacuum(sub: Subparsers) -> None:
    p = sub.add_parser("vacuum", help="return a store's free space to the file system")
    p.add_argument("--db", help="database URL (RNGVAULT_DB, default: data dir)")
    p.set_defaults(func=cmd_vacuum)


def cmd_vacuum(args: argparse.Namespace) -> int:
    """Free pages left by deletes go back to the file system (SQLite: incremental vacuum in
    short steps; a store made before incremental vacuum is converted by one full VACUUM)."""
    from rngvault.server.storage import open_store, redact

    url = _settings(db=args.db).db

    async def vacuum() -> int:
        store = await open_store(url)
        try:
            return await store.vacuum()
        finally:
            await store.close()

    returned = asyncio.run(vacuum())
    print(f"vacuumed {redact(url)}: {returned / 2**20:.1f} MiB returned", file=sys.stderr)
    return 0


COMMANDS: list[Callable[[Subparsers], None]] = [add_backup, add_gc, add_vacuum]
