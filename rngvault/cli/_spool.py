"""``rngvault spool``: the snapshots a server has not taken yet, kept on this machine.

Each command is a few lines over ``rngvault.spool_list``, ``spool_retry`` and
``spool_drop``; sending goes to the one server named by --url, with --token, so that no
other server ever sees that token.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import click

import rngvault
from rngvault._errors import RngVaultError
from rngvault.cli._common import (
    example,
    given_token,
    given_url,
    json_option,
    print_json,
    print_table,
    say,
    store_options,
    when,
)

BUCKETS = ("waiting", "refused", "conflict", "failed")
bucket_option = click.option(
    "--bucket",
    "buckets",
    multiple=True,
    type=click.Choice(BUCKETS),
    help="only this bucket (repeat for several)",
)


@click.group(
    epilog=example(
        "rngvault spool status",
        "rngvault spool list --url http://vault.lab:8000",
        "rngvault spool retry --url http://vault.lab:8000 --token $RNGVAULT_TOKEN",
    )
)
def spool() -> None:
    """Snapshots waiting on this machine for a server that was away (waiting), that
    refused the token (refused: 401/403), that holds other content under the name
    (conflict: 409) or that failed to take them several times (failed)."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _label(entry: Any) -> str:
    return f"{entry.run}/{entry.name}#{entry.rank}"


def _by_server() -> Iterator[tuple[str, list[Any]]]:
    entries = rngvault.spool_list(given_url())
    servers: dict[str, list[Any]] = {}
    for entry in entries:
        servers.setdefault(entry.url, []).append(entry)
    yield from servers.items()


@spool.command(epilog=example("rngvault spool status", "rngvault spool status --json"))
@store_options
@json_option
def status(as_json: bool) -> None:
    """Per server with anything spooled: how many snapshots are waiting, refused (401/403),
    in conflict (409) and failed, and their bytes; each failed one's last error. Sends
    nothing."""
    rows: list[dict[str, Any]] = []
    for url, entries in _by_server():
        in_bucket = {b: [e for e in entries if e.bucket == b] for b in BUCKETS}
        rows.append(
            {
                "url": url,
                "waiting": [_label(e) for e in in_bucket["waiting"]],
                "refused": [_label(e) for e in in_bucket["refused"]],
                "conflicts": [_label(e) for e in in_bucket["conflict"]],
                "failed": [
                    {"snapshot": _label(e), "attempts": e.attempts, "error": e.error}
                    for e in in_bucket["failed"]
                ],
                "bytes": sum(len(e.data) for e in entries),
            }
        )
    if as_json:
        print_json(rows)
    elif not rows:
        say("the spool is empty")
    else:
        print_table(
            ("SERVER", "WAITING", "CONFLICTS", "FAILED", "REFUSED", "BYTES"),
            [
                (
                    r["url"],
                    len(r["waiting"]),
                    len(r["conflicts"]),
                    len(r["failed"]),
                    len(r["refused"]),
                    r["bytes"],
                )
                for r in rows
            ],
        )
        for row in rows:
            for failed in row["failed"]:
                error = " ".join(failed["error"].split())
                click.echo(f"failed {failed['snapshot']} for {row['url']}: {error}")


@spool.command(
    "list",
    epilog=example("rngvault spool list", "rngvault spool list --bucket refused --json"),
)
@bucket_option
@store_options
@json_option
def list_(buckets: tuple[str, ...], as_json: bool) -> None:
    """Every spooled snapshot (of the server --url names, else of every server): its
    server, bucket, time spooled, size and last error."""
    entries = rngvault.spool_list(given_url(), bucket=buckets or None)  # type: ignore[arg-type]
    if as_json:
        print_json(
            [
                {
                    "url": e.url,
                    "bucket": e.bucket,
                    "snapshot": _label(e),
                    "spooled": e.spooled,
                    "bytes": len(e.data),
                    "attempts": e.attempts,
                    "error": e.error,
                }
                for e in entries
            ]
        )
    elif not entries:
        say("the spool is empty")
    else:
        print_table(
            ("SERVER", "BUCKET", "SNAPSHOT", "SPOOLED", "BYTES", "ERROR"),
            [
                (
                    e.url,
                    e.bucket,
                    _label(e),
                    when(e.spooled),
                    len(e.data),
                    " ".join(e.error.split()),
                )
                for e in entries
            ],
        )


def _server(action: str) -> str | None:
    """The --url to send to; with none, None when nothing is held back (said so), else an
    error naming the servers that have snapshots held back."""
    url = given_url()
    if url:
        return url.rstrip("/")
    held = [
        f"{server} ({', '.join(f'{n} {b}' for b, n in Counter(e.bucket for e in entries).items())})"
        for server, entries in _by_server()
    ]
    if not held:
        say("the spool is empty")
        return None
    raise RngVaultError(
        f"spool {action} sends to one server at a time, with its token: pass --url for one "
        f"of: {'; '.join(held)}"
    )


def _send(url: str, buckets: tuple[str, ...]) -> int:
    """Move ``buckets`` back to the waiting ones and send what waits; warnings as lines;
    exit 1 if some are still held back."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = rngvault.spool_retry(url, bucket=buckets, token=given_token())  # type: ignore[arg-type]
    for warning in caught:
        say(f"rngvault: {warning.message}")
    if outcome.left:
        raise RngVaultError(f"{outcome.left} snapshot(s) still wait in the spool of {url}")
    say(f"{url}: all sent")
    return 0


@spool.command(epilog=example("rngvault spool flush --url http://vault.lab:8000"))
@store_options
def flush() -> int:
    """Send what waits for the server of --url (or $RNGVAULT_URL), with --token (or
    $RNGVAULT_TOKEN): no other server ever sees that token. Exit 1 if some still wait.
    With no URL, name the servers that have snapshots held back (exit 1)."""
    url = _server("flush")
    if url is None:
        return 0
    if not rngvault.spool_list(url, bucket="waiting"):
        held = rngvault.spool_list(url)
        more = f" ({len(held)} held back: see `rngvault spool list`)" if held else ""
        say(f"{url}: nothing waits{more}")
        return 0
    return _send(url, ())


@spool.command(
    epilog=example(
        "rngvault spool retry --url http://vault.lab:8000 --token $NEW_TOKEN",
        "rngvault spool retry --url http://vault.lab:8000 --bucket failed",
    )
)
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    type=click.Choice(("refused", "failed", "conflict")),
    help="which held-back snapshots to send again (default: refused and failed)",
)
@store_options
def retry(buckets: tuple[str, ...]) -> int:
    """Put the held-back snapshots of the server of --url (refused for the token, or failed)
    back with the waiting ones, and send them all now with --token. Exit 1 if some are
    still held back."""
    url = _server("retry")
    if url is None:
        return 0
    chosen = buckets or ("refused", "failed")
    counts: Counter[str] = Counter(e.bucket for e in rngvault.spool_list(url, bucket=chosen))  # type: ignore[arg-type]
    moved = " and ".join(f"{counts[b]} {b}" for b in chosen if counts[b]) or "no held-back"
    say(f"{url}: {moved} snapshot(s) to send again")
    return _send(url, chosen)


@spool.command(
    epilog=example(
        "rngvault spool drop --url http://vault.lab:8000 --bucket conflict",
        "rngvault spool drop --url http://vault.lab:8000 alice/resnet50/epoch3#0",
    )
)
@click.argument("snapshots", nargs=-1, metavar="[NS/RUN/NAME#RANK]...")
@bucket_option
@store_options
def drop(snapshots: tuple[str, ...], buckets: tuple[str, ...]) -> None:
    """Delete spooled snapshots of the server of --url for good: every one of --bucket, or
    the ones named as `spool list` shows them."""
    url = given_url()
    if not url:
        raise click.UsageError("spool drop needs --url: the server whose snapshots to delete")
    if not snapshots and not buckets:
        raise click.UsageError("give --bucket or the snapshots to drop (as `spool list` shows)")
    entries = rngvault.spool_list(url, bucket=buckets or None)  # type: ignore[arg-type]
    if snapshots:
        wanted = set(snapshots)
        entries = [e for e in entries if _label(e) in wanted]
        unknown = wanted - {_label(e) for e in entries}
        if unknown:
            raise RngVaultError(f"not in the spool of {url}: {', '.join(sorted(unknown))}")
    dropped = rngvault.spool_drop(url, entries=entries)
    say(f"{url.rstrip('/')}: dropped {dropped} snapshot(s)")


COMMANDS = [spool]
