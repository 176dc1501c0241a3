"""Server settings: explicit arguments, then RNGVAULT_* variables, then defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rngvault import RngVaultError
from rngvault.server.settings import Settings
from tests._live import free_port
from tests.server.conftest import make_body


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


def test_from_env_reads_the_mapping_it_is_given_and_settings_read_this_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RNGVAULT_PORT", "1234")
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "process"))
    assert Settings().port == Settings.from_env().port == 1234
    other = Settings.from_env({"RNGVAULT_HOME": str(tmp_path / "given")})
    assert other.port == 8000
    assert other.db == f"sqlite:///{tmp_path / 'given' / 'rngvault.db'}"
    assert other.tokens == tmp_path / "given" / "tokens.json"
    assert Settings().tokens == tmp_path / "process" / "tokens.json"


def test_the_data_directory_is_rngvault_home_else_the_platforms(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platformdirs

    monkeypatch.delenv("RNGVAULT_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = platformdirs.user_data_path("rngvault", appauthor=False)
    assert Settings.from_env({}).tokens == expected / "tokens.json"
    assert Settings.from_env({"RNGVAULT_HOME": "~/rv"}).tokens == Path.home() / "rv/tokens.json"


def test_a_tokens_file_named_must_exist_and_empty_variables_are_unset(tmp_path: Path) -> None:
    assert Settings.from_env({}).tokens_required is False
    assert Settings.from_env({"RNGVAULT_TOKENS": str(tmp_path / "t.json")}).tokens_required
    assert Settings.from_env({}, tokens=str(tmp_path / "t.json")).tokens_required
    empty = Settings.from_env({"RNGVAULT_TOKENS": "", "RNGVAULT_DB": "", "RNGVAULT_PORT": ""})
    assert (empty.tokens_required, empty.port) == (False, 8000)
    assert empty.db.endswith("rngvault.db")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "http", "invalid setting port: write a number, not 'http'"),
        ("PORT", "70000", "invalid setting port: 70000 is outside 0..65535"),
        ("MAX_BODY", "lots", "invalid setting max_body: invalid size 'lots'"),
        ("MAX_BODY", "0", "invalid setting max_body: must be a positive number, got 0"),
        ("INSECURE_OPEN", "maybe", "invalid setting insecure_open: write true or false"),
        ("ACCESS_LOG", "2", "invalid setting access_log: write true or false"),
        ("ALLOWED_HOSTS", "a b", "invalid setting allowed_hosts: allowed host 'a b'"),
        ("MAX_CONNECTIONS", "-1", "invalid setting max_connections: must be a positive"),
        ("HEADER_TIMEOUT", "soon", "invalid setting header_timeout: write a number"),
        ("KEEP_ALIVE", "inf", "invalid setting keep_alive: must be a positive number"),
    ],
)
def test_a_bad_value_is_a_one_line_error_naming_the_setting(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(RngVaultError) as raised:
        Settings.from_env({f"RNGVAULT_{variable}": value})
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    name = variable.lower()
    with pytest.raises(RngVaultError, match=f"invalid setting {name}"):
        Settings.from_env({}, **{name: value})  # an argument is checked the same way


def test_settings_are_checked_frozen_and_replaced_with_checks(tmp_path: Path) -> None:
    settings = Settings.from_env({}, port="8080", max_body="1MiB", allowed_hosts=["A.example"])
    assert (settings.port, settings.max_body, settings.allowed_hosts) == (
        8080,
        2**20,
        ("a.example",),
    )
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]
    moved = settings.replace(host="::1", tokens=tmp_path / "t.json")
    assert (moved.host, moved.port, moved.tokens) == ("::1", 8080, tmp_path / "t.json")
    with pytest.raises(RngVaultError, match="invalid setting keep_alive"):
        settings.replace(keep_alive=0)
    with pytest.raises(RngVaultError, match="invalid setting colour"):
        Settings.from_env({}, colour="blue")


def serve(cwd: Path, db: str) -> str:
    """``rngvault serve --db DB`` run in ``cwd`` until it answers; stores one snapshot; its log."""
    port = free_port()
    root = str(Path(__file__).resolve().parents[2])  # this checkout's rngvault, from any cwd
    env = {**os.environ, "RNGVAULT_HOME": str(cwd / "home"), "PYTHONPATH": root}
    command = [sys.executable, "-m", "rngvault", "serve", "--port", str(port), "--db", db]
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as server:
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    answer = httpx.put(
                        f"http://127.0.0.1:{port}/v1/runs/alice/r/snapshots/s",
                        content=make_body(1),
                        headers={"Content-Type": "application/msgpack"},
                        timeout=5,
                    )
                    assert answer.status_code == 201, answer.text
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0].decode()
    return output


@pytest.mark.parametrize(
    ("given", "file"),
    [
        ("./plain.db", "plain.db"),
        ("{tmp}/absolute.db", "absolute.db"),
        ("sqlite:///relative.db", "relative.db"),  # three slashes: relative to the directory
        ("sqlite:///{tmp}/url.db", "url.db"),  # four: an absolute path
    ],
)
def test_db_takes_paths_and_urls_and_the_server_logs_the_absolute_file(
    tmp_path: Path, given: str, file: str
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    where = tmp_path if "{tmp}" in given else cwd
    log = serve(cwd, given.format(tmp=tmp_path))
    assert (where / file).is_file(), log
    assert f"database SQLite {(where / file).resolve()}" in log
