"""Client tests run against a real server process on loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rngvault import cli

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's spool and cache live in the test's temporary directory."""
    home = tmp_path / "client-home"
    monkeypatch.setenv("RNGVAULT_HOME", str(home))
    for name in ("RNGVAULT_SPOOL", "RNGVAULT_STORE", "RNGVAULT_URL", "RNGVAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def rv(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the command in-process: (exit status, stdout, stderr). An exception that is not
    a usage error escapes, so a traceback the user would see fails the test."""

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            status = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help and usage errors
            status = int(exc.code or 0)
        out = capsys.readouterr()
        return status, out.out, out.err

    return run
