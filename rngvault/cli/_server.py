"""The server's commands, run on the server's machine: serve and token."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import time
from pathlib import Path
from typing import Any

import click

from rngvault._errors import MissingExtraError, RngVaultError
from rngvault.cli._common import example, print_table, say, when


def settings(**given: Any) -> Any:
    """The server's Settings: what was given, else the environment, else defaults."""
    from rngvault.server.settings import Settings

    return Settings.from_env(**given)


# -- serve ----------------------------------------------------------------------------------


def _check_port(host: str, port: int) -> None:
    """A one-line error now for an address uvicorn could not listen on (a busy port, an
    address this machine does not have), instead of its multi-line log and exit 3."""
    if port == 0:
        return  # any free port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise RngVaultError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            why = exc.strerror or str(exc)
            hint = (
                "; another server may be using it: choose --port"
                if exc.errno == errno.EADDRINUSE
                else ""
            )
            raise RngVaultError(f"cannot listen on {host}:{port}: {why}{hint}") from None


async def _check_store(url: str, blobs: str | None = None) -> None:
    """Open and close the store once, so that a bad URL, a missing extra or an unreachable
    database is a one-line error before the server starts, not a startup traceback. An
    object store that does not answer yet is no error here: /healthz reports it."""
    from rngvault.server.storage import open_store, redact

    try:
        store = await open_store(url, blobs=blobs)
    except RngVaultError:
        raise
    except Exception as exc:
        raise RngVaultError(f"cannot open the database {redact(url)}: {exc}") from None
    await store.close()


@click.command(
    epilog=example(
        "rngvault serve",
        "rngvault serve --host 0.0.0.0 --port 8000 --db postgresql://vault@db/vault --workers 4",
        "AWS_ENDPOINT_URL=http://s3.lab:8333 rngvault serve --blobs s3://rngvault/blobs",
    )
)
@click.option("--host", help="address to listen on (RNGVAULT_HOST, default 127.0.0.1)")
@click.option("--port", type=int, help="TCP port (RNGVAULT_PORT, default 8000)")
@click.option(
    "--db",
    help="database URL, sqlite:///path or postgresql://user@host/db (RNGVAULT_DB, default: "
    "data dir)",
)
@click.option("--tokens", help="tokens file (RNGVAULT_TOKENS, default: data dir)")
@click.option("--max-body", help="largest request body, e.g. 16MiB (RNGVAULT_MAX_BODY)")
@click.option(
    "--insecure-open",
    is_flag=True,
    default=None,
    help="serve a non-loopback address without tokens (anyone may write)",
)
@click.option("--access-log", is_flag=True, default=None, help="log every request")
@click.option(
    "--allowed-hosts",
    help="more Host names a server without tokens answers, comma-separated "
    "(RNGVAULT_ALLOWED_HOSTS; * for any)",
)
@click.option(
    "--max-connections",
    help="most open connections, kept below the file limit (RNGVAULT_MAX_CONNECTIONS, "
    "default 1000)",
)
@click.option(
    "--header-timeout",
    help="seconds a connection has to send a request's headers (RNGVAULT_HEADER_TIMEOUT, "
    "default 10)",
)
@click.option(
    "--keep-alive", help="seconds an idle connection stays open (RNGVAULT_KEEP_ALIVE, default 5)"
)
@click.option(
    "--blobs",
    metavar="s3://BUCKET/PREFIX",
    help="keep large state blobs in this S3 bucket, endpoint and credentials from AWS_* "
    "(RNGVAULT_BLOBS; default: in the database)",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="server processes sharing the port (more suit PostgreSQL: on SQLite they take turns "
    "at the write lock)",
)
def serve(workers: int, **given: Any) -> None:
    """Serve the snapshot store over HTTP with uvicorn until interrupted (settings:
    docs/server.md)."""
    try:
        import uvicorn  # noqa: F401  (serving may be imported already; uvicorn must be here)

        from rngvault.server import serving
        from rngvault.server.app import create_app
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "server", "rngvault serve") from None
    import logging

    chosen = settings(**given)
    if not 1 <= workers <= 512:
        raise RngVaultError(f"--workers must be 1 to 512, not {workers}")
    app = create_app(chosen)
    asyncio.run(_check_store(chosen.db, chosen.blobs))
    _check_port(chosen.host, chosen.port)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    mode = "tokens " + str(chosen.tokens) if not app.state.auth.open else "open, no tokens"
    logging.getLogger("rngvault.server").info("%s", mode)  # the app logs the database
    serving.run(app, chosen, workers=workers)


# -- token ----------------------------------------------------------------------------------


@click.group(
    epilog=example(
        "rngvault token create --grant read:'*' --grant write:bob --expires 90d",
        "rngvault token list",
        "rngvault token revoke 3f2a9c0d1e4b",
    )
)
@click.option("--tokens", help="tokens file (RNGVAULT_TOKENS, default: data dir)")
@click.pass_context
def token(ctx: click.Context, tokens: str | None) -> None:
    """Create, list and revoke the server's tokens (in its tokens file)."""
    ctx.meta["rngvault.tokens"] = tokens


def _tokens_here(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["rngvault.tokens"] = value


# --tokens after the subcommand too (`rngvault token create --tokens FILE ...`)
tokens_after = click.option(
    "--tokens",
    expose_value=False,
    callback=_tokens_here,
    help="tokens file (RNGVAULT_TOKENS, default: data dir); also before the subcommand",
)


def _token_file() -> Any:
    from rngvault.server.tokens import TokenFile

    given = click.get_current_context().meta.get("rngvault.tokens")
    return TokenFile(Path(settings(tokens=given).tokens))


@token.command(
    epilog=example(
        "rngvault token create --grant read:'*' --grant write:bob --note bob",
        "rngvault token create --scope write --namespace alice --expires 30d",
    )
)
@click.option(
    "--grant",
    "grants",
    multiple=True,
    metavar="SCOPE:PATTERN",
    help="what the token may do: read, write or admin on the namespaces a pattern matches "
    "(alice, team-*, *); repeat for several",
)
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), help="one grant's scope")
@click.option("--namespace", help="one grant's namespace pattern, e.g. alice, team-*, *")
@click.option("--expires", help="30d, 12h, 2w, or an ISO date (default: never)")
@click.option("--note", default="", help="a label shown by 'token list'")
@tokens_after
def create(
    grants: tuple[str, ...],
    scope: str | None,
    namespace: str | None,
    expires: str | None,
    note: str,
) -> None:
    """Make a token and print it on stdout (once; only its hash is stored). Give its
    grants with --grant, or one grant with --scope and --namespace."""
    from rngvault.server.tokens import parse_expiry, parse_grant

    if (scope is None) != (namespace is None):
        raise click.UsageError("--scope and --namespace go together (or use --grant)")
    chosen = [parse_grant(text) for text in grants]
    if scope is not None:
        chosen.append(parse_grant(f"{scope}:{namespace}"))
    if not chosen:
        raise click.UsageError("give --grant SCOPE:PATTERN (or --scope and --namespace)")
    when_expires = parse_expiry(expires, time.time()) if expires else None
    file = _token_file()
    record, secret = file.create(grants=chosen, expires=when_expires, note=note)
    click.echo(secret)
    shown = ", ".join(map(str, record.grants))
    say(
        f"token {record.id}: grants {shown}, expires {when(record.expires)}; stored hashed in "
        f"{file.path}. It is shown only now."
    )


@token.command("list", epilog=example("rngvault token list", "rngvault token list --json"))
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@tokens_after
def list_(as_json: bool) -> None:
    """List the tokens: ids, grants, times and states, never secrets."""
    records = _token_file().load()
    now = time.time()
    if as_json:
        fields = ("id", "scope", "namespace", "created", "expires", "revoked", "note")
        rows = []
        for r in records:
            row = {f: getattr(r, f) for f in fields}
            row["grants"] = [str(g) for g in r.grants]
            rows.append(row)
        click.echo(json.dumps(rows, indent=1))
        return

    def state(r: Any) -> str:
        return "active" if r.active(now) else ("revoked" if r.revoked else "expired")

    print_table(
        ("ID", "GRANTS", "CREATED", "EXPIRES", "STATE", "NOTE"),
        [
            (r.id, ",".join(map(str, r.grants)), when(r.created), when(r.expires), state(r), r.note)
            for r in records
        ],
    )


@token.command(epilog=example("rngvault token revoke 3f2a9c0d1e4b"))
@click.argument("ident", metavar="ID")
@tokens_after
def revoke(ident: str) -> None:
    """Revoke a token by its id (see 'token list'); it stays listed as revoked."""
    record = _token_file().revoke(ident)
    say(f"token {record.id} revoked at {when(record.revoked)}")


COMMANDS = [serve, token]
