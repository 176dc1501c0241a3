"""The rngvault command against a real server: every command, its help, its exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pytest

import rngvault
from rngvault import cli
from rngvault.stores.http import HttpStore
from tests._live import ServerProcess
from tests.client.conftest import Run


@pytest.fixture
def filled(live_server: ServerProcess) -> str:
    """A server holding run alice/exp with snapshots epoch0..epoch2 (augment moves)."""
    vault = rngvault.Vault(live_server.url, run="alice/exp", on_error="raise")
    aug = vault.track(np.random.default_rng(1), "augment")
    for epoch in range(3):
        vault.snapshot(f"epoch{epoch}", epoch=epoch, metrics={"loss": 1.0 / (epoch + 1)})
        aug.bit_generator.random_raw(10)
        random.random()
    vault.flush()
    return live_server.url


def command_paths(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of ``group``, as the words that run it."""
    paths = []
    for name, command in group.commands.items():
        paths.append((*path, name))
        if isinstance(command, click.Group):
            paths += command_paths(command, (*path, name))
    return paths


def test_every_command_has_help_with_a_description_and_an_example(rv: Run) -> None:
    """Each command and subcommand answers --help with its description and an example of
    its use, exit 0."""
    paths = command_paths(cli.cli)
    assert {"runs", "ls", "show", "diff", "pull", "push", "export", "import", "verify"} <= {
        p[0] for p in paths
    }
    assert {("spool", a) for a in ("status", "list", "flush", "retry", "drop")} <= set(paths)
    for path in paths:
        status, out, _ = rv(*path, "--help")
        assert status == 0 and out.startswith("Usage: rngvault " + " ".join(path)), path
        description = out.split("\n\n")[1].strip()
        assert len(description) > 20, path
        assert f"$ rngvault {path[0]}" in out.split("Examples:")[1], path


def test_runs_and_ls(rv: Run, filled: str) -> None:
    """runs lists the run; ls lists its snapshots as a table and as JSON."""
    status, out, _ = rv("--url", filled, "runs")
    assert (status, out.split()) == (0, ["alice/exp"])
    status, out, _ = rv("--url", filled, "ls", "alice/exp")
    assert status == 0 and out.splitlines()[0].split()[:3] == ["NAME", "CREATED", "RANKS"]
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["epoch0", "epoch1", "epoch2"]
    status, out, _ = rv("--url", filled, "ls", "alice/exp", "--json")
    data = json.loads(out)
    assert [d["name"] for d in data] == ["epoch0", "epoch1", "epoch2"]
    assert (
        data[1]["metrics"] == {"loss": 0.5} and data[1]["generators"]["augment"] == "numpy.bitgen"
    )


def test_show_table_and_json(rv: Run, filled: str) -> None:
    """show prints generators with positions and the environment; --json is the rendering."""
    status, out, _ = rv("--url", filled, "show", "alice/exp", "epoch1")
    assert status == 0
    assert "augment" in out and "numpy.bitgen" in out and "PCG64 state 0x" in out
    assert "ENVIRONMENT" in out and "flags.PYTHONHASHSEED" in out
    status, out, _ = rv("--url", filled, "show", "alice/exp", "epoch1", "--json")
    data = json.loads(out)
    assert data["generators"]["augment"]["family"] == "numpy.bitgen"


def test_diff_within_and_across_runs(rv: Run, filled: str) -> None:
    """diff names each generator's distance; B may come from another run."""
    status, out, _ = rv("--url", filled, "diff", "alice/exp", "epoch0", "epoch2", "--json")
    entries = {e["name"]: e for e in json.loads(out)["entries"]}
    assert status == 0 and entries["augment"]["distance"] == 20
    assert entries["augment"]["unit"] == "raw 64-bit outputs"
    status, out, _ = rv("--url", filled, "diff", "alice/exp", "epoch0", "epoch1")
    assert status == 0 and "advanced" in out and "10" in out.split()


def test_pull_push_and_conflicts(rv: Run, filled: str, tmp_path: Path) -> None:
    """pull writes the exact bytes; push stores them elsewhere; a taken name is exit 1."""
    file = tmp_path / "e1.msgpack"
    assert rv("--url", filled, "pull", "alice/exp", "epoch1", "-o", str(file))[0] == 0
    data = file.read_bytes()
    assert HttpStore(filled).get("alice/exp", "epoch1") == data
    status, _, err = rv("--url", filled, "push", str(file), "bob/copy", "e1")
    assert status == 0 and "stored" in err
    status, _, err = rv("--url", filled, "push", str(file), "bob/copy", "e1")
    assert status == 0 and "already stored (identical)" in err
    other = tmp_path / "e2.msgpack"
    rv("--url", filled, "pull", "alice/exp", "epoch2", "-o", str(other))
    status, _, err = rv("--url", filled, "push", str(other), "bob/copy", "e1")
    assert status == 1 and err.count("\n") == 1 and "409" in err and "Traceback" not in err


def test_export_and_import_a_run(rv: Run, filled: str, tmp_path: Path) -> None:
    """export writes every snapshot and a manifest; import stores them all. Off a terminal
    there is no progress bar: no carriage return reaches a log file."""
    target = tmp_path / "export"
    status, _, err = rv("--url", filled, "export", "alice/exp", str(target))
    assert status == 0 and "exported 3 snapshot file(s)" in err and "\r" not in err
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["run"] == "alice/exp"
    status, out, _ = rv("--url", filled, "show", "alice/exp", "--json")
    record = json.loads(out)["record"]
    assert record["command"] and manifest["record"] == record  # the record travels
    status, _, err = rv("--url", filled, "import", str(target), "--run", "carol/imported")
    assert status == 0 and "(3 new)" in err and "\r" not in err
    status, out, _ = rv("--url", filled, "ls", "carol/imported", "--json")
    # sent several at once: the server lists them in the order they arrived
    assert sorted(d["name"] for d in json.loads(out)) == ["epoch0", "epoch1", "epoch2"]
    status, out, _ = rv("--url", filled, "show", "carol/imported", "--json")
    assert json.loads(out)["record"] == record
    status, _, err = rv("--url", filled, "import", str(tmp_path))
    assert status == 1 and "not an export" in err


def test_verify(rv: Run, filled: str) -> None:
    """verify checks every generator's probes here: all ok."""
    status, out, _ = rv("--url", filled, "verify", "alice/exp", "epoch0", "--json")
    assert status == 0 and set(json.loads(out).values()) == {"ok"}


def test_user_mistakes_are_one_line_errors(rv: Run, filled: str, tmp_path: Path) -> None:
    """Bad names, missing snapshots and garbage files exit 1 with one line; usage errors 2."""
    for argv in (
        ("ls", "not-a-run"),
        ("show", "alice/exp", "nope"),
        ("show", "alice/exp", "../x"),
    ):
        status, _, err = rv("--url", filled, *argv)
        assert status == 1 and err.count("\n") == 1 and err.startswith("rngvault: error:"), argv
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00not msgpack")
    status, _, err = rv("--url", filled, "push", str(garbage), "bob/x", "y")
    assert status == 1 and "garbage" in err
    status, out, _ = rv("--url", filled, "show", "alice/exp")  # a run alone: its record
    assert status == 0 and out.startswith("run alice/exp")
    assert rv("--url", filled, "show", "alice/exp", "a", "b")[0] == 2  # one snapshot too many


def test_spool_status_and_flush(
    rv: Run,
    server_factory: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Pushes to a dead server wait in the spool; status lists them; flush --url sends them."""
    monkeypatch.setenv("RNGVAULT_TIMEOUT", "1")
    server = server_factory()
    server.kill9()
    file = tmp_path / "s.msgpack"
    file.write_bytes(rngvault.encode(rngvault.capture({"g": np.random.default_rng(0)})))
    with pytest.warns(Warning):
        status, _, err = rv("--url", server.url, "push", str(file), "alice/spooled", "s")
    assert status == 0 and "in the spool" in err
    status, out, _ = rv("spool", "status", "--json")
    [entry] = json.loads(out)
    assert entry["url"] == server.url and entry["waiting"] == ["alice/spooled/s#0"]
    assert rv("--url", server.url, "spool", "flush")[0] == 1  # still down
    status, _, err = rv("spool", "flush")  # no URL: says which servers wait, sends nothing
    assert status == 1 and f"pass --url for one of: {server.url} (1 waiting" in err
    server.start()
    status, _, err = rv("--url", server.url, "spool", "flush")
    assert status == 0 and "all sent" in err
    status, out, _ = rv("--url", server.url, "ls", "alice/spooled", "--json")
    assert [d["name"] for d in json.loads(out)] == ["s"]


def test_two_runs_two_tokens(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, rv: Run
) -> None:
    """A teammate's read token fetches alice's run and cannot push; alice's own write token
    cannot touch bob's namespace."""
    tokens = tmp_path / "tokens.json"

    def token(scope: str, namespace: str) -> str:
        status, out, _ = rv(
            "token", "--tokens", str(tokens), "create", "--scope", scope, "--namespace", namespace
        )
        assert status == 0
        return out.strip()

    alice_write, bob_write, bob_reads_alice = (
        token("write", "alice"),
        token("write", "bob"),
        token("read", "alice"),
    )
    server = server_factory("--tokens", str(tokens))
    alice = rngvault.Vault(server.url, run="alice/exp", token=alice_write, on_error="raise")
    alice.snapshot("epoch0", durable=True)
    bob = rngvault.Vault(server.url, run="bob/exp", token=bob_write, on_error="raise")
    bob.snapshot("epoch0", durable=True)

    fetched = rngvault.fetch("alice/exp", "epoch0", url=server.url, token=bob_reads_alice)
    assert fetched.digest == alice.get("epoch0").digest
    reader = rngvault.Vault(server.url, run="alice/exp", token=bob_reads_alice, on_error="raise")
    reader.snapshot("epoch1")
    with pytest.raises(rngvault.AuthError, match="403"):
        reader.flush()
    # the refused snapshot is kept, for a retry with a better token; this test drops it
    assert rngvault.spool_drop(server.url, bucket="refused") == 1
    with pytest.raises(rngvault.AuthError):
        rngvault.fetch("bob/exp", "epoch0", url=server.url, token=alice_write)
    with pytest.raises(rngvault.AuthError, match="401"):
        rngvault.fetch("bob/exp", "epoch0", url=server.url, token="not-a-token")


def test_python_dash_m_rngvault_runs_the_command(filled: str) -> None:
    """`python -m rngvault` is the same command."""
    done = subprocess.run(
        [sys.executable, "-m", "rngvault", "--url", filled, "runs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.split() == ["alice/exp"]


def test_file_system_errors_are_one_line(rv: Run, filled: str, tmp_path: Path) -> None:
    """pull into a missing directory, export onto a file: one line, exit 1, no traceback."""
    status, _, err = rv(
        "--url",
        filled,
        "pull",
        "alice/exp",
        "epoch0",
        "-o",
        str(tmp_path / "missing" / "x.msgpack"),
    )
    assert status == 1 and err.count("\n") == 1 and "No such file or directory" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = rv("--url", filled, "export", "alice/exp", str(blocker))
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
