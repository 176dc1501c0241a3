"""The server shares only the codec, the name rules and the errors with the client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLIENT = ("rngvault.stores", "rngvault._vault", "rngvault._paths", "rngvault.stores.spool")


def imported_by(statement: str, home: Path | None = None) -> list[str]:
    """The client modules a fresh interpreter has loaded after ``statement``."""
    script = (
        f"import sys\n{statement}\n"
        f"import json; print(json.dumps([m for m in {CLIENT!r} if m in sys.modules]))"
    )
    env = {**os.environ, "RNGVAULT_HOME": str(home)} if home else None
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_server_app_does_not_import_the_vault_or_the_client_stores(tmp_path: Path) -> None:
    assert imported_by("import rngvault.server.app") == []
    assert imported_by("from rngvault.server.app import create_app; create_app()", tmp_path) == []


def test_the_client_is_still_there_on_first_use() -> None:
    loaded = imported_by("import rngvault; rngvault.Vault; from rngvault import open_store")
    assert {"rngvault.stores", "rngvault._vault"} <= set(loaded)
