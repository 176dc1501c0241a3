"""The ``rngvault`` command: a thin layer over the library, on click.

``main(argv) -> int`` runs it and returns the exit status: 0 ok, 1 failure (a library or
file-system error, printed as one line ``rngvault: error: ...``), 2 usage error (click's
message); bisect has its own (0 agree, 1 diverge, 2 nothing compared). Commands live in
``_server`` (serve, token), ``_maintenance`` (backup, gc, vacuum), ``_blobs`` (blobs
move), ``_snapshots`` (runs, ls, show, verify, diff, pull, push), ``_bisect`` (bisect),
``_seeds`` (seeds), ``_transfer`` (export, import), ``_spool`` and ``_integrations``
(import-checkpoint). The server, torch for
import-checkpoint and matplotlib for ``seeds --plot`` are imported only by the commands
that need them, so the command needs just the core and click.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

import rngvault
from rngvault._errors import AuthError, RngVaultError
from rngvault.cli import (
    _bisect,
    _blobs,
    _integrations,
    _maintenance,
    _seeds,
    _server,
    _snapshots,
    _spool,
    _transfer,
)
from rngvault.cli._common import example, root_store_options

__all__ = ["cli", "main"]


class _Root(click.Group):
    """The top-level group: commands listed in the order they were added, and a closed
    standard output (``rngvault ls big | head -3``) ends the command quietly."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # What CPython's docs advise: point stdout at devnull, so that the flush at
            # exit does not fail again, and stop.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass  # no file descriptor behind stdout (captured): nothing to flush
            return 0


@click.group(
    cls=_Root,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=example(
        "export RNGVAULT_URL=http://vault.lab:8000 RNGVAULT_TOKEN=...",
        "rngvault ls alice/resnet50",
        "rngvault diff alice/resnet50 epoch3 epoch4",
    ),
)
@click.version_option(rngvault.__version__, prog_name="rngvault", message="%(prog)s %(version)s")
@root_store_options
def cli() -> None:
    """Capture, store and restore the exact state of every random number generator in a
    training run. --url and --token may come before or after the command."""


for module in (
    _server,
    _maintenance,
    _blobs,
    _snapshots,
    _bisect,
    _seeds,
    _transfer,
    _spool,
    _integrations,
):
    for command in module.COMMANDS:
        cli.add_command(command)


# How the HTTP store words a server's error answer: "GET http://host/path?query -> 404 ..."
_HTTP_ANSWER = re.compile(
    r"^[A-Z]+ (?P<server>https?://[^/\s]+)\S* -> (?P<status>\d{3}) (?P<detail>.*)$", re.DOTALL
)


def _message(exc: BaseException) -> str:
    """One line for a failure. A server's error answer is shown as the server and its own
    words, without the request's path and query; one about the token says what to do."""
    text = str(exc)
    answer = _HTTP_ANSWER.match(text)
    if answer:
        server, status, detail = answer["server"], answer["status"], answer["detail"]
        text = f"{server} answered {status} {detail}"
        if isinstance(exc, AuthError):
            text += (
                ": set RNGVAULT_TOKEN or pass --token"
                if status == "401"
                else ": set RNGVAULT_TOKEN or pass --token with a token whose grants cover it"
            )
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 failure, 2 usage)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = cli.main(args=args, prog_name="rngvault", standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        return 2
    except click.ClickException as exc:
        exc.show()
        return 1
    except click.Abort:  # Ctrl-C
        click.echo("rngvault: interrupted", err=True)
        return 130
    except (RngVaultError, OSError) as exc:
        click.echo(f"rngvault: error: {_message(exc)}", err=True)
        return 1
    return status if isinstance(status, int) else 0
