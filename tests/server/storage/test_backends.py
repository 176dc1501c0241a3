"""open_store picks a backend by URL scheme; an uninstalled driver names the extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from rngvault._errors import StoreError
from rngvault.server.storage import migrations, open_store, redact, scheme_of

pytestmark = pytest.mark.anyio


def test_schemes_select_backends_and_a_plain_path_is_sqlite() -> None:
    assert scheme_of("sqlite:///a.db") == "sqlite"
    assert scheme_of("postgresql://u@h/db") == "postgresql"
    assert scheme_of("postgresql+psycopg://u@h/db") == "postgresql"
    assert scheme_of("postgres://u@h/db") == "postgres"
    assert scheme_of("/var/lib/rngvault.db") == "sqlite"


def test_urls_in_messages_and_logs_lose_their_password() -> None:
    assert redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("sqlite:///var/a.db") == "sqlite:///var/a.db"
    assert redact("/var/a.db") == "/var/a.db"


async def test_an_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(StoreError, match=r"supported: postgres://, postgresql://, sqlite://"):
        await open_store("mysql://u@h/db")


def test_without_psycopg_the_server_imports_and_postgres_urls_name_the_extra() -> None:
    """In a fresh interpreter where ``import psycopg`` fails, as without the extra."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["psycopg"] = None  # import psycopg raises ImportError
        import rngvault.server.app
        from rngvault import MissingExtraError
        from rngvault.server.storage import open_store
        try:
            asyncio.run(open_store("postgresql://u@127.0.0.1/db"))
        except MissingExtraError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'rngvault[postgres]'" in done.stdout
    assert "PostgreSQL backend" in done.stdout


def test_every_dialect_has_the_same_numbered_migrations() -> None:
    """A schema change is a new script for each backend, under one number and name."""
    sqlite = [(m.version, m.name) for m in migrations.load("sqlite")]
    postgresql = [(m.version, m.name) for m in migrations.load("postgresql")]
    assert sqlite == postgresql and sqlite[0] == (1, "initial")
    assert all(m.statements for m in migrations.load("postgresql"))
