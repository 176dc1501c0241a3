"""Server settings: explicit arguments, then RNGVAULT_* variables, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from rngvault import RngVaultError
from rngvault.server.settings import Settings


def test_explicit_arguments_win_over_the_environment(tmp_path: Path) -> None:
    env = {
        "RNGVAULT_INSECURE_OPEN": "1",
        "RNGVAULT_ACCESS_LOG": "yes",
        "RNGVAULT_DB": f"sqlite:///{tmp_path / 'env.db'}",
        "RNGVAULT_TOKENS": str(tmp_path / "env-tokens.json"),
        "RNGVAULT_PORT": "9001",
    }
    settings = Settings.from_env(env, insecure_open=False, access_log=False, port=0)
    assert settings.insecure_open is False
    assert settings.access_log is False
    assert settings.port == 0
    for name in ("db", "tokens"):  # an empty value given is an error, not "use the default"
        with pytest.raises(RngVaultError, match=f"{name}.*empty"):
            Settings.from_env(env, **{name: ""})


def test_none_means_not_given(tmp_path: Path) -> None:
    env = {"RNGVAULT_INSECURE_OPEN": "1", "RNGVAULT_DB": f"sqlite:///{tmp_path / 'env.db'}"}
    settings = Settings.from_env(env, insecure_open=None, db=None)
    assert settings.insecure_open is True
    assert settings.db == env["RNGVAULT_DB"]
    assert settings.tokens_required is False
