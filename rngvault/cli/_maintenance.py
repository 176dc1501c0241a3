"""Store maintenance on the server's database: backup, gc (retention) and vacuum. Like
``serve`` and ``token`` they run on the server's machine; ``gc`` also runs from anywhere
through the server's admin route when ``--url`` is given."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import click

from rngvault._errors import RngVaultError, StoreError
from rngvault.cli._common import example, given_token, given_url, say, store_options
from rngvault.cli._server import settings

db_option = click.option("--db", help="database URL (RNGVAULT_DB, default: data dir)")
GC_TIMEOUT = 600.0  # seconds: a gc of a large store takes a while, in batches


@click.command(
    epilog=example("rngvault backup --db sqlite:////srv/rngvault/rngvault.db /backups/vault.db")
)
@db_option
@click.argument("file", type=click.Path(path_type=Path))
def backup(db: str | None, file: Path) -> None:
    """Copy a live SQLite store to FILE (which must not exist) with SQLite's online
    backup: consistent while the server runs, and compact."""
    from rngvault.server.storage import scheme_of
    from rngvault.server.storage.sqlite import backup as sqlite_backup

    url = settings(db=db).db
    if scheme_of(url) != "sqlite":
        raise RngVaultError(f"backup copies SQLite stores; for {url.split('://')[0]} use pg_dump")
    if file.exists():
        raise RngVaultError(f"{file} exists: choose a new file for the backup")
    sqlite_backup(url, file)
    say(f"backed up {url} to {file}")


def _count(ctx: click.Context, param: click.Parameter, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise click.BadParameter(f"invalid count {text!r}: write 0 or a positive number")
    return int(text)


@click.command(
    epilog=example(
        "rngvault gc 'alice/resnet-*' --keep-last 5 --dry-run",
        "rngvault gc '*' --older-than 90d --url http://vault.lab:8000 --token $ADMIN",
    )
)
@click.argument("pattern", metavar="RUN-PATTERN")
@click.option(
    "--keep-last", callback=_count, metavar="N", help="keep the N newest snapshots of each run"
)
@click.option(
    "--older-than", metavar="DURATION", help="delete snapshots stored over 30d, 12h, 90m, 2w ago"
)
@click.option("--dry-run", is_flag=True, help="say what would go; delete nothing")
@db_option
@store_options
def gc(
    pattern: str, keep_last: int | None, older_than: str | None, dry_run: bool, db: str | None
) -> None:
    """In every run matching RUN-PATTERN (namespace/run, with * and ?), delete the
    snapshots that every given rule selects; runs left empty are removed and state blobs
    no snapshot uses are freed. Acts on the database (--db, which always wins), or,
    given an http(s) --url or $RNGVAULT_URL and no --db, through the server's admin route
    (an admin token)."""
    from rngvault.server.tokens import parse_duration

    if keep_last is None and older_than is None:
        raise click.UsageError("give --keep-last, --older-than or both")
    age = None
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    request: dict[str, Any] = {"pattern": pattern, "dry_run": dry_run}
    if keep_last is not None:
        request["keep_last"] = keep_last
    if older_than is not None:
        request["older_than"] = older_than
    url = given_url()
    if db is None and url and url.startswith(("http://", "https://")):
        answer = _gc_remote(url, given_token(), request)
    else:  # --db always means the database, whatever RNGVAULT_URL says
        answer = _gc_local(db, request, keep_last, age)
    verb = "would delete" if answer["dry_run"] else "deleted"
    for item in answer["sample"]:
        click.echo(f"{verb} {item['namespace']}/{item['run']}/{item['name']}")
    more = answer["snapshots"] - len(answer["sample"])
    if more > 0:
        click.echo(f"... and {more} more")
    objects = answer.get("objects") or 0  # a server older than blob stores sends none
    swept = f"; {objects} objects removed from the blob store" if objects else ""
    say(
        f"{verb} {answer['snapshots']} snapshots ({answer['ranks']} ranks) in "
        f"{answer['runs']} matching runs; {answer['blobs']} state blobs freed{swept}"
    )


def _gc_local(
    db: str | None, request: dict[str, Any], keep_last: int | None, age: int | None
) -> dict[str, Any]:
    from rngvault.server.schemas import RUN_PATTERN_RULE, GcBody
    from rngvault.server.storage import open_store

    if not re.fullmatch(RUN_PATTERN_RULE, request["pattern"]):
        raise click.UsageError(
            f"invalid RUN-PATTERN {request['pattern']!r}: write namespace/run with * and ?"
        )
    before = None if age is None else time.time() - age

    async def collect() -> dict[str, Any]:
        chosen = settings(db=db)  # with RNGVAULT_BLOBS set, gc also sweeps the bucket
        store = await open_store(chosen.db, blobs=chosen.blobs)
        try:
            collected = await store.collect(
                request["pattern"],
                keep_last=keep_last,
                stored_before=before,
                dry_run=request["dry_run"],
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
    try:
        body = response.json()
        fields = ("dry_run", "sample", "snapshots", "ranks", "runs", "blobs")
        if not isinstance(body, dict) or any(f not in body for f in fields):
            raise ValueError("not a gc result")
        for item in body["sample"]:
            item["namespace"], item["run"], item["name"]
    except (ValueError, TypeError, KeyError):
        raise StoreError(
            f"{url}/v1/admin/gc answered something that is not a gc result "
            f"({response.headers.get('content-type', 'no type')}): is it an rngvault server?"
        ) from None
    result: dict[str, Any] = body
    return result


@click.command(epilog=example("rngvault vacuum --db sqlite:////srv/rngvault/rngvault.db"))
@db_option
def vacuum(db: str | None) -> None:
    """Return the free space deletes left in a store to the file system (SQLite:
    incremental vacuum in short steps; a store made before incremental vacuum is
    converted by one full VACUUM)."""
    from rngvault.server.storage import open_store, redact

    url = settings(db=db).db

    async def run() -> int:
        store = await open_store(url)
        try:
            return await store.vacuum()
        finally:
            await store.close()

    returned = asyncio.run(run())
    say(f"vacuumed {redact(url)}: {returned / 2**20:.1f} MiB returned")


COMMANDS = [backup, gc, vacuum]
