"""``rngvault blobs move``: a store's large state blobs from its database into an S3 bucket,
or back. Runs on the server's machine, against the server's database, like ``backup``."""

from __future__ import annotations

import click

from rngvault._errors import MissingExtraError
from rngvault.cli._common import example, say
from rngvault.cli._server import settings


@click.group(
    epilog=example(
        "AWS_ENDPOINT_URL=http://s3.lab:8333 rngvault blobs move --to s3://rngvault/blobs",
        "rngvault blobs move --to db --blobs s3://rngvault/blobs",
    )
)
def blobs() -> None:
    """Where the server keeps its state blobs: in the database or an S3 bucket."""


@blobs.command(
    epilog=example(
        "rngvault blobs move --to s3://rngvault/blobs --db postgresql://vault@db/vault",
        "rngvault blobs move --to db --blobs s3://rngvault/blobs",
    )
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="s3://BUCKET/PREFIX|db",
    help="the bucket to move the blobs into, or db to bring them back",
)
@click.option(
    "--blobs",
    "bucket",
    metavar="s3://BUCKET/PREFIX",
    help="with --to db: the bucket they are in (RNGVAULT_BLOBS)",
)
@click.option("--db", help="database URL (RNGVAULT_DB, default: data dir)")
@click.option(
    "--batch", type=click.IntRange(1, 10_000), default=64, show_default=True,
    help="rows per transaction",
)  # fmt: skip
def move(target: str, bucket: str | None, db: str | None, batch: int) -> None:
    """Move the large whole state blobs (1 KiB and up) out of the database into an S3 bucket
    (endpoint and credentials from AWS_*), or back with --to db. Each batch is uploaded,
    then committed; an interrupted move continues where it stopped when run again. Run the
    server with --blobs set to the same bucket while blobs are there."""
    try:
        from rngvault.server.storage import blobs_move
        from rngvault.server.storage.blobs import S3Blobs
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "server", "rngvault blobs") from None

    if target == "db":
        chosen = settings(db=db, blobs=bucket)
        if chosen.blobs is None:
            raise click.UsageError("--to db needs the bucket: give --blobs s3://BUCKET/PREFIX")
        direction, where = "in", chosen.blobs
    else:
        if bucket is not None and bucket != target:
            raise click.UsageError("--blobs names another bucket than --to: give only --to")
        chosen = settings(db=db, blobs=target)  # checks the URL: one line naming what is wrong
        direction, where = "out", target
    store = S3Blobs(where)
    verb = "to the database from" if direction == "in" else "to"

    def progress(moved: int, size: int, total: int) -> None:
        say(f"moved {moved} of {total} state blobs ({size:,} bytes) {verb} {where}")

    mover = blobs_move.move_in if direction == "in" else blobs_move.move_out
    done = mover(chosen.db, store, batch=batch, progress=progress)
    click.echo(f"moved {done.states} state blobs ({done.bytes:,} bytes) {verb} {where}")
    if done.left:
        say(f"{done.left} left to move (written meanwhile): run the command again")


COMMANDS = [blobs]
