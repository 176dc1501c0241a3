"""Versioned schema migrations, shared by every SQL backend.

Each dialect has a folder of numbered scripts, ``<dialect>/NNNN_name.sql``, applied in order
and never edited once released: a schema change is a new script. A backend reads its current
version from the ``schema_version`` table (one row per applied script) and applies the
pending scripts in one transaction, under its own lock (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: an advisory lock), so servers starting at the same time migrate once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from rngvault._errors import StoreError

SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied DOUBLE PRECISION NOT NULL
)"""

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema script.

    Attributes:
        version: its number (1, 2, ...).
        name: its name (``initial``).
        statements: its SQL statements, in order.
    """

    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> tuple[str, ...]:
    """Statements of a script: split on ``;`` at line ends (scripts keep one per line end)."""
    chunks = re.split(r";\s*$", script, flags=re.MULTILINE)
    return tuple(c.strip() for c in chunks if c.strip() and not _only_comments(c))


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in chunk.splitlines())


def load(dialect: str) -> tuple[Migration, ...]:
    """Every migration of ``dialect`` (``"sqlite"``, ``"postgresql"``), by version."""
    folder = resources.files(__name__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            script = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match[1]), match[2], split_statements(script)))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"{dialect} migrations are not numbered 1..{len(found)}")
    return tuple(found)


def pending(current: int, migrations: tuple[Migration, ...]) -> tuple[Migration, ...]:
    """The migrations after ``current``; a database newer than this rngvault is an error."""
    if current > len(migrations):
        raise StoreError(
            f"the database schema is version {current}, newer than this rngvault knows "
            f"({len(migrations)}): upgrade rngvault"
        )
    return migrations[current:]
