"""The ``rngvault`` command: a thin layer over the library.

Each subcommand is a pair of functions, ``add_<name>(subparsers)`` that declares it and
``cmd_<name>(args) -> int`` that runs it; ``COMMANDS`` lists the ``add_`` functions. Library
errors (``RngVaultError``) print as one line and exit 1; usage errors exit 2 (argparse).
The server is imported only by the commands that need it, so this module needs just the
core (numpy and msgpack).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rngvault
from rngvault import cli_client, cli_store
from rngvault._errors import MissingExtraError, RngVaultError

Subparsers = Any  # argparse's _SubParsersAction, private


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Left-aligned columns, for people."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _settings(**given: Any) -> Any:
    from rngvault.server.settings import Settings

    return Settings.from_env(**given)


# -- serve ----------------------------------------------------------------------------------


def add_serve(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the HTTP snapshot store", description=cmd_serve.__doc__)
    p.add_argument("--host", help="address to listen on (RNGVAULT_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (RNGVAULT_PORT, default 8000)")
    p.add_argument(
        "--db",
        help="database URL, sqlite:///path or postgresql://user@host/db (RNGVAULT_DB, "
        "default: data dir)",
    )
    p.add_argument("--tokens", help="tokens file (RNGVAULT_TOKENS, default: data dir)")
    p.add_argument("--max-body", help="largest request body, e.g. 16MiB (RNGVAULT_MAX_BODY)")
    p.add_argument(
        "--insecure-open",
        action="store_true",
        default=None,
        help="serve a non-loopback address without tokens (anyone may write)",
    )
    p.add_argument("--access-log", action="store_true", default=None, help="log every request")
    p.add_argument(
        "--allowed-hosts",
        help="more Host names a server without tokens answers, comma-separated "
        "(RNGVAULT_ALLOWED_HOSTS; * for any)",
    )
    p.add_argument(
        "--max-connections",
        help="most open connections, kept below the file limit (RNGVAULT_MAX_CONNECTIONS, "
        "default 1000)",
    )
    p.add_argument(
        "--header-timeout",
        help="seconds a connection has to send a request's headers (RNGVAULT_HEADER_TIMEOUT, "
        "default 10)",
    )
    p.add_argument(
        "--keep-alive",
        help="seconds an idle connection stays open (RNGVAULT_KEEP_ALIVE, default 5)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (default 1; more suit PostgreSQL: on SQLite "
        "they take turns at the write lock)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the snapshot store with uvicorn until interrupted."""
    try:
        import uvicorn  # noqa: F401  (serving may be imported already; uvicorn must be here)

        from rngvault.server import serving
        from rngvault.server.app import create_app
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "server", "rngvault serve") from None
    import logging

    settings = _settings(
        host=args.host,
        port=args.port,
        db=args.db,
        tokens=args.tokens,
        max_body=args.max_body,
        insecure_open=args.insecure_open,
        access_log=args.access_log,
        allowed_hosts=args.allowed_hosts,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        keep_alive=args.keep_alive,
    )
    app = create_app(settings)
    asyncio.run(_check_store(settings.db))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    mode = "tokens " + str(settings.tokens) if not app.state.auth.open else "open, no tokens"
    from rngvault.server.storage import redact

    logging.getLogger("rngvault.server").info("database %s; %s", redact(settings.db), mode)
    if not 1 <= args.workers <= 512:
        raise RngVaultError(f"--workers must be 1 to 512, not {args.workers}")
    serving.run(app, settings, workers=args.workers)
    return 0


async def _check_store(url: str) -> None:
    """Open and close the store once, so that a bad URL, a missing extra or an unreachable
    database is a one-line error before the server starts, not a startup traceback."""
    from rngvault.server.storage import open_store, redact

    try:
        store = await open_store(url)
    except RngVaultError:
        raise
    except Exception as exc:
        raise RngVaultError(f"cannot open the database {redact(url)}: {exc}") from None
    await store.close()


# -- token ----------------------------------------------------------------------------------


def add_token(sub: Subparsers) -> None:
    p = sub.add_parser("token", help="create, list and revoke server tokens")
    p.add_argument("--tokens", help="tokens file (RNGVAULT_TOKENS, default: data dir)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--scope", required=True, choices=("read", "write", "admin"))
    create.add_argument(
        "--namespace", required=True, help="namespace pattern, e.g. alice, team-*, *"
    )
    create.add_argument("--expires", help="30d, 12h, 2w, or an ISO date (default: never)")
    create.add_argument("--note", default="", help="a label shown by 'token list'")
    create.set_defaults(func=cmd_token_create)
    listing = actions.add_parser("list", help="list tokens (ids, never secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(func=cmd_token_list)
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", help="the token's id (see 'token list')")
    revoke.set_defaults(func=cmd_token_revoke)


def _token_file(args: argparse.Namespace) -> Any:
    from rngvault.server.tokens import TokenFile

    return TokenFile(Path(_settings(tokens=args.tokens).tokens))


def cmd_token_create(args: argparse.Namespace) -> int:
    from rngvault.server.tokens import parse_expiry

    expires = parse_expiry(args.expires, time.time()) if args.expires else None
    file = _token_file(args)
    record, token = file.create(args.scope, args.namespace, expires=expires, note=args.note)
    print(token)
    print(
        f"token {record.id}: scope {record.scope}, namespaces {record.namespace!r}, "
        f"expires {_when(record.expires)}; stored hashed in {file.path}. "
        "It is shown only now.",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    records = _token_file(args).load()
    now = time.time()
    if args.json:
        fields = ("id", "scope", "namespace", "created", "expires", "revoked", "note")
        print(json.dumps([{f: getattr(r, f) for f in fields} for r in records], indent=1))
        return 0

    def state(r: Any) -> str:
        return "active" if r.active(now) else ("revoked" if r.revoked else "expired")

    rows = [
        (r.id, r.scope, r.namespace, _when(r.created), _when(r.expires), state(r), r.note)
        for r in records
    ]
    print_table(rows, ("ID", "SCOPE", "NAMESPACE", "CREATED", "EXPIRES", "STATE", "NOTE"))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    record = _token_file(args).revoke(args.id)
    print(f"token {record.id} revoked at {_when(record.revoked)}", file=sys.stderr)
    return 0


# -- main -----------------------------------------------------------------------------------

COMMANDS: list[Callable[[Subparsers], None]] = [
    add_serve,
    add_token,
    *cli_store.COMMANDS,
    *cli_client.COMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rngvault",
        description="Capture, store and restore the exact state of every random number "
        "generator in a training run.",
    )
    parser.add_argument("--version", action="version", version=f"rngvault {rngvault.__version__}")
    parser.add_argument(
        "--url",
        default=os.environ.get("RNGVAULT_URL"),
        help="the snapshot server (default: $RNGVAULT_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("RNGVAULT_TOKEN"),
        help="the server token (default: $RNGVAULT_TOKEN)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 failure, 2 usage)."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except (RngVaultError, OSError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"rngvault: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
