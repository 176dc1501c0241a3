"""Run records (rngvault/_record.py): the validator, what ``gather`` finds, the seeding kept
by ``seed_everything``, and ``Vault(config=...)``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault import _record, _seeding
from rngvault._record import (
    CONFIG_MAX_BYTES,
    RECORD_MAX_BYTES,
    RecordError,
    check_config,
    check_record,
    gather,
    git_state,
)


@pytest.fixture(autouse=True)
def _fresh_seeding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_seeding, "_SEEDED", {})
    monkeypatch.setattr(_seeding, "_REGISTERED", {})


def test_a_gathered_record_passes_its_own_check_and_holds_what_it_says() -> None:
    rngvault.seed_everything(3407)
    record = gather(config={"lr": 0.1, "layers": [64, 64]}, environment={"python": "3.11"})
    assert check_record(record) == record
    assert record["seed"] == 3407
    assert record["seeding"]["seeded"][:2] == ["python.global", "numpy.global"]
    assert record["seeding"]["deterministic"] is False
    assert record["config"] == {"lr": 0.1, "layers": [64, 64]}
    assert record["command"] == [str(a) for a in sys.argv]
    assert record["environment"] == {"python": "3.11"}
    assert isinstance(record["host"], str) and record["host"]


def test_per_worker_generators_give_their_base_entropy() -> None:
    generator = np.random.default_rng(12345)
    rngvault.per_worker(generator)
    seeding = _seeding.recorded()
    assert "seed" not in seeding  # seed_everything was not called
    assert seeding["per_worker"] == [str(generator.bit_generator.seed_seq.entropy)]
    record = gather(config=None, environment=None)
    assert record["seed"] is None
    assert record["seeding"] == {"per_worker": ["12345"]}
    assert check_record(record) == record


def test_nothing_seeded_records_no_seed() -> None:
    record = gather(config=None, environment=None)
    assert record["seed"] is None and record["seeding"] is None and record["config"] == {}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_of_the_script_else_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setattr(sys, "argv", [str(outside / "missing.py")])
    assert git_state() is None
    assert gather(config=None, environment=None)["git"] is None

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    subprocess.run(["git", "init", "-q"], check=True, cwd=repo)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run(["git", "add", "train.py"], check=True, cwd=repo)
    subprocess.run(["git", "commit", "-q", "-m", "one"], check=True, cwd=repo)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], check=True, capture_output=True, text=True, cwd=repo
    ).stdout.strip()
    assert git_state(str(repo)) == {"commit": head, "dirty": False}
    # the script's checkout, though the process runs elsewhere
    monkeypatch.setattr(sys, "argv", [str(repo / "train.py"), "--lr", "0.1"])
    assert git_state() == {"commit": head, "dirty": False}
    (repo / "train.py").write_text("print(2)\n")
    assert git_state() == {"commit": head, "dirty": True}
    # a command installed outside any checkout, run from inside one: the current directory's
    monkeypatch.setattr(sys, "argv", [str(outside / "missing.py")])
    monkeypatch.chdir(repo)
    assert git_state() == {"commit": head, "dirty": True}


def test_a_huge_or_undecodable_command_line_still_makes_a_valid_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "bad-\udcff-name", *["x" * 1000] * 100])
    record = gather(config={"lr": 0.1}, environment={"python": "3.11"})
    assert check_record(record) == record
    assert record["command"][1] == "bad-\ufffd-name"
    assert len(record["command"]) == 64 and all(len(a) <= 256 for a in record["command"])
    assert record["environment"] == {"python": "3.11"}


def test_git_missing_gives_no_git_field(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("git")

    monkeypatch.setattr(_record.subprocess, "run", no_git)
    assert git_state() is None


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ([1, 2], "must be a mapping"),
        ({1: "a"}, "key 1 that is not a string"),
        ({"lr": float("nan")}, "config['lr'] = nan is not a finite number"),
        ({"model": {"act": object()}}, "config['model']['act'] is a object"),
        ({"x": 2**70}, "does not fit in 64 bits"),
        ({"name": "\ud800"}, "config holds a lone surrogate"),
        ({"blob": "x" * CONFIG_MAX_BYTES}, "more than the 32768 a record keeps"),
    ],
)
def test_bad_configs_are_refused_naming_what_is_wrong(config: Any, words: str) -> None:
    with pytest.raises(RecordError) as caught:
        check_config(config)
    assert words in str(caught.value)


def test_a_config_of_16_levels_fits_in_a_record() -> None:
    """The depth limit is the config's own: a record holding it one level down accepts it."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(15):
        node["a"] = {}
        node = node["a"]
    node["leaf"] = 1
    assert check_record({"config": check_config(deep)})["config"] == deep


def test_a_newer_record_s_fields_are_kept_when_reading() -> None:
    newer = {"seed": 1, "cluster": {"name": "a"}}
    with pytest.raises(RecordError, match="no field 'cluster'"):
        check_record(newer)
    assert check_record(newer, allow_unknown=True) == newer


def test_deep_config_is_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(RecordError, match="nested more than 16 levels"):
        check_config(deep)


def test_a_config_is_copied_as_json() -> None:
    given = {"layers": (64, 64), "nested": {"a": True}}
    copied = check_config(given)
    assert copied == {"layers": [64, 64], "nested": {"a": True}}
    given["nested"]["a"] = False
    assert copied["nested"]["a"] is True


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("text", "must be a JSON object"),
        ({"seed": -1}, "'seed' must be an int >= 0"),
        ({"seed": True}, "'seed' must be an int >= 0"),
        ({"owner": "x"}, "no field 'owner'"),
        ({"git": {"commit": "abc", "dirty": False}}, "'git.commit' must be a commit id"),
        ({"git": {"commit": "g" * 40, "dirty": False}}, "'git.commit' must be a commit id"),
        ({"git": {"commit": "a" * 40, "dirty": "no"}}, "'git.dirty' must be a bool"),
        ({"command": "python train.py"}, "'command' must be a list of strings"),
        ({"seeding": {"deterministic": "yes"}}, "'seeding.deterministic'"),
        ({"seeding": {"deterministic": 1}}, "'seeding.deterministic'"),
        ({"created": "today"}, "'created' must be a number"),
        ({"host": "\udfff"}, "a run record holds a lone surrogate"),
        ({"environment": {"big": "x" * RECORD_MAX_BYTES}}, "more than 65536"),
    ],
)
def test_bad_records_are_refused_naming_the_field(record: Any, words: str) -> None:
    with pytest.raises(RecordError) as caught:
        check_record(record)
    assert words in str(caught.value)


def test_the_empty_record_is_valid_and_record_json_is_canonical() -> None:
    assert check_record({}) == {}
    text = _record.record_json({"seed": 1, "config": {"b": 1, "a": 2}})
    assert text == json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)
    assert json.loads(text) == {"seed": 1, "config": {"a": 2, "b": 1}}


def test_vault_refuses_a_bad_config_at_once(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="config\\['when'\\] is a datetime"):
        import datetime

        rngvault.Vault(tmp_path, run="a/b", config={"when": datetime.datetime.now()})
