"""Store maintenance commands that act on the server's database directly: backup (and, with
retention, gc and vacuum). Like ``serve`` and ``token`` they run on the server's machine."""

from __future__ import annotations

import argparse
import sys
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


COMMANDS: list[Callable[[Subparsers], None]] = [add_backup]
