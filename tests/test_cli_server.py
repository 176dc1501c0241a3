"""The server's commands: serve, token create/list/revoke, backup; exit codes and messages."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rngvault import cli
from rngvault.server.tokens import TokenFile, token_hash


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every default path points into tmp_path."""
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "home"))
    for name in ("RNGVAULT_DB", "RNGVAULT_TOKENS", "RNGVAULT_HOST", "RNGVAULT_INSECURE_OPEN"):
        monkeypatch.delenv(name, raising=False)


def test_token_create_prints_the_token_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.json"
    status = cli.main(
        [
            "token",
            "--tokens",
            str(tokens),
            "create",
            "--scope",
            "write",
            "--namespace",
            "alice",
            "--expires",
            "30d",
            "--note",
            "ci",
        ]
    )
    out, err = capsys.readouterr()
    token = out.strip()
    assert status == 0 and token.startswith("rv_")
    assert "shown only now" in err
    [record] = TokenFile(tokens).load()
    assert record.sha256 == token_hash(token) and token not in tokens.read_text()
    assert (record.scope, record.namespace, record.note) == ("write", "alice", "ci")
    assert record.expires is not None


def test_token_list_shows_ids_and_states_and_revoke_marks_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = TokenFile(tmp_path / "home" / "tokens.json")  # the default tokens file
    kept, _ = file.create("read", "*")
    gone, secret = file.create("admin", "bob")
    assert cli.main(["token", "revoke", gone.id]) == 0
    assert cli.main(["token", "list"]) == 0
    table = capsys.readouterr().out
    assert kept.id in table and gone.id in table and "revoked" in table and secret not in table
    assert cli.main(["token", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(t["id"], t["revoked"] is not None) for t in listed] == [
        (kept.id, False),
        (gone.id, True),
    ]
    assert "sha256" not in listed[0]


def test_library_errors_are_one_line_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "revoke", "ffffffffffff"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rngvault: error: no token with id 'ffffffffffff'")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["nonsense"], ["token", "create", "--scope", "owner", "--namespace", "a"]):
        assert cli.main(argv) == 2
        assert "Usage: rngvault" in capsys.readouterr().err + capsys.readouterr().out


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["serve"],
        ["token"],
        ["token", "create"],
        ["token", "list"],
        ["token", "revoke"],
        ["backup"],
    ):
        assert cli.main([*argv, "--help"]) == 0
        out = capsys.readouterr().out
        assert "Usage: rngvault " + " ".join(argv) in out and "Examples:" in out


def test_serve_refuses_a_public_address_without_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 1
    err = capsys.readouterr().err
    assert "refusing to serve 0.0.0.0 without tokens" in err and "--insecure-open" in err


def test_serve_without_the_server_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert cli.main(["serve"]) == 1
    assert "pip install 'rngvault[server]'" in capsys.readouterr().err


def test_the_cli_imports_no_server_code() -> None:
    code = "import sys, rngvault.cli; print(sorted(m for m in ('fastapi', 'uvicorn', "
    code += "'starlette', 'rngvault.server') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_backup_refuses_postgresql_and_existing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["backup", "--db", "postgresql://x/y", str(tmp_path / "b")]) == 1
    assert "pg_dump" in capsys.readouterr().err
    (tmp_path / "exists").write_bytes(b"")
    assert (
        cli.main(["backup", "--db", f"sqlite:///{tmp_path / 'db'}", str(tmp_path / "exists")]) == 1
    )
    assert "exists" in capsys.readouterr().err
    assert (
        cli.main(["backup", "--db", f"sqlite:///{tmp_path / 'none.db'}", str(tmp_path / "c")]) == 1
    )
    assert "no SQLite database" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--db", "mysql://x/y"], "no storage backend for mysql://"),
        (["--port", "99999"], "99999 is outside 0..65535"),
        (["--db", "sqlite:///x.db?cache=1"], "invalid SQLite URL option"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad database URL or port is a one-line error with exit status 1, never a startup
    traceback from uvicorn."""
    assert cli.main(["serve", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_serve_on_a_busy_port_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process listens on the port: one line naming it, exit 1 (not uvicorn's
    multi-line log and exit 3)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = cli.main(["serve", "--port", str(port), "--db", f"sqlite:///{tmp_path / 'db'}"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "choose --port" in err


def test_token_create_takes_several_grants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--grant read:'*' --grant write:bob makes one token of two grants; --scope with
    --namespace is one grant; neither, or half of the pair, is a usage error."""
    tokens = tmp_path / "tokens.json"
    base = ["token", "--tokens", str(tokens), "create"]
    assert cli.main([*base, "--grant", "read:*", "--grant", "write:bob"]) == 0
    assert "grants read:*, write:bob" in capsys.readouterr().err
    assert cli.main([*base, "--scope", "admin", "--namespace", "team-*"]) == 0
    both, one = TokenFile(tokens).load()
    assert [str(g) for g in both.grants] == ["read:*", "write:bob"]
    assert [str(g) for g in one.grants] == ["admin:team-*"]
    assert cli.main(["token", "--tokens", str(tokens), "list"]) == 0
    assert "read:*,write:bob" in capsys.readouterr().out
    assert cli.main([*base]) == 2
    assert cli.main([*base, "--scope", "read"]) == 2
    assert cli.main([*base, "--grant", "owner:bob"]) == 1
    assert "invalid scope 'owner'" in capsys.readouterr().err


def test_tokens_file_may_follow_the_token_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rngvault token create --tokens FILE`, the form the server's hints print, works."""
    tokens = tmp_path / "tokens.json"
    assert cli.main(["token", "create", "--tokens", str(tokens), "--grant", "read:alice"]) == 0
    assert cli.main(["token", "list", "--tokens", str(tokens)]) == 0
    assert "read:alice" in capsys.readouterr().out
    (record,) = TokenFile(tokens).load()
    assert cli.main(["token", "revoke", record.id, "--tokens", str(tokens)]) == 0
    assert TokenFile(tokens).load()[0].revoked is not None


def test_import_rngvault_imports_neither_click_nor_the_cli() -> None:
    code = "import sys, rngvault; print(sorted(m for m in ('click', 'rngvault.cli') "
    code += "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
