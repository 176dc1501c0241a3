"""The client's configuration: every RNGVAULT_* variable is read in rngvault._config, with
one failure policy (an RngVaultError naming the variable), and the stores use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rngvault
from rngvault._config import (
    DEFAULT_EXIT_TIMEOUT,
    DEFAULT_SPOOL_MAX_BYTES,
    DEFAULT_TIMEOUT,
    client_config,
)
from rngvault._errors import RngVaultError
from rngvault.stores import LocalStore, open_store
from rngvault.stores.http import HttpStore
from rngvault.stores.spool import Spool

VARIABLES = (
    "RNGVAULT_URL",
    "RNGVAULT_TOKEN",
    "RNGVAULT_TIMEOUT",
    "RNGVAULT_EXIT_TIMEOUT",
    "RNGVAULT_HOME",
    "RNGVAULT_STORE",
    "RNGVAULT_SPOOL",
    "RNGVAULT_SPOOL_MAX_BYTES",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RNGVAULT_* variable of the caller's, and platform directories under tmp_path."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def without_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # importing it raises ImportError


def test_defaults_are_the_platforms_directories_and_documented_values() -> None:
    import platformdirs

    config = client_config({})
    data = Path(platformdirs.user_data_dir("rngvault", appauthor=False))
    assert config.data_dir == data
    assert config.cache_dir == Path(platformdirs.user_cache_dir("rngvault", appauthor=False))
    assert config.store == data / "store" and config.spool_dir == data / "spool"
    assert (config.url, config.token) == (None, None)
    assert (
        (config.timeout, config.exit_timeout) == (DEFAULT_TIMEOUT, DEFAULT_EXIT_TIMEOUT) == (10, 10)
    )
    assert config.spool_max_bytes == DEFAULT_SPOOL_MAX_BYTES == 2**30


def test_each_variable_sets_its_setting(tmp_path: Path) -> None:
    config = client_config(
        {
            "RNGVAULT_URL": "http://127.0.0.1:9",
            "RNGVAULT_TOKEN": "secret-token",
            "RNGVAULT_TIMEOUT": "2.5",
            "RNGVAULT_EXIT_TIMEOUT": "0",
            "RNGVAULT_HOME": str(tmp_path / "home"),
            "RNGVAULT_STORE": str(tmp_path / "store"),
            "RNGVAULT_SPOOL": "~/spools",
            "RNGVAULT_SPOOL_MAX_BYTES": " 4096 ",
        }
    )
    assert config.url == "http://127.0.0.1:9" and config.token == "secret-token"
    assert (config.timeout, config.exit_timeout) == (2.5, 0.0)
    assert config.data_dir == tmp_path / "home"
    assert config.store == tmp_path / "store"
    assert config.spool_dir == Path.home() / "spools"  # ~ expanded
    assert config.spool_max_bytes == 4096
    assert "secret-token" not in repr(config)  # a token never reaches a log through repr


def test_rngvault_home_holds_data_store_spool_and_cache(tmp_path: Path) -> None:
    """$RNGVAULT_HOME overrides both platform directories: the cache is its ``cache``."""
    config = client_config({"RNGVAULT_HOME": "~/rv-home"})
    home = Path.home() / "rv-home"
    assert config.data_dir == home and config.cache_dir == home / "cache"
    assert (config.store, config.spool_dir) == (home / "store", home / "spool")


def test_an_empty_variable_counts_as_unset() -> None:
    assert client_config({name: "" for name in VARIABLES}) == client_config({})


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("RNGVAULT_TIMEOUT", "ten", "more than 0"),
        ("RNGVAULT_TIMEOUT", "0", "more than 0"),
        ("RNGVAULT_TIMEOUT", "-1", "more than 0"),
        ("RNGVAULT_TIMEOUT", "nan", "more than 0"),
        ("RNGVAULT_TIMEOUT", "inf", "more than 0"),
        ("RNGVAULT_EXIT_TIMEOUT", "soon", "0 or more"),
        ("RNGVAULT_EXIT_TIMEOUT", "-0.5", "0 or more"),
        ("RNGVAULT_SPOOL_MAX_BYTES", "1.5", "whole number"),
        ("RNGVAULT_SPOOL_MAX_BYTES", "-1", "whole number"),
        ("RNGVAULT_SPOOL_MAX_BYTES", "1GiB", "whole number"),
        ("RNGVAULT_SPOOL_MAX_BYTES", "9" * 5000, "whole number"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable_and_what_it_accepts(
    name: str, value: str, accepted: str
) -> None:
    with pytest.raises(RngVaultError, match=f"^{name}=") as raised:
        client_config({name: value})
    message = str(raised.value)
    assert "\n" not in message and accepted in message and "default" in message
    assert repr(value)[:40] in message


def test_without_platformdirs_the_same_directories_are_written_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The core runs without platformdirs, and then finds the directories platformdirs
    would have given (this platform, these XDG variables)."""
    with_it = client_config()
    without_platformdirs(monkeypatch)
    with pytest.raises(ImportError):
        import platformdirs  # noqa: F401
    without = client_config()
    assert (without.data_dir, without.cache_dir) == (with_it.data_dir, with_it.cache_dir)
    if sys.platform.startswith("linux"):
        assert without.data_dir == tmp_path / "xdg-data" / "rngvault"
        assert without.cache_dir == tmp_path / "xdg-cache" / "rngvault"
        monkeypatch.delenv("XDG_DATA_HOME")
        monkeypatch.setenv("XDG_CACHE_HOME", "  ")  # blank: ignored, as platformdirs does
        bare = client_config()
        assert bare.data_dir == Path.home() / ".local" / "share" / "rngvault"
        assert bare.cache_dir == Path.home() / ".cache" / "rngvault"
    home = client_config({"RNGVAULT_HOME": str(tmp_path / "h")})
    assert (home.data_dir, home.cache_dir) == (tmp_path / "h", tmp_path / "h" / "cache")


def test_the_core_imports_and_stores_without_platformdirs(tmp_path: Path) -> None:
    """A fresh interpreter where platformdirs cannot be imported: a Vault on the default
    local store works, in the hand-written data directory."""
    code = (
        "import sys; sys.modules['platformdirs'] = None\n"
        "import numpy as np, rngvault\n"
        "v = rngvault.Vault(run='a/b', track_globals=False)\n"
        "v.track(np.random.default_rng(0), 'g'); v.snapshot('s', durable=True); v.close()\n"
        "print(v.store.location)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(Path(__file__).parents[1]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    if sys.platform.startswith("linux"):
        assert Path(done.stdout.strip()) == tmp_path / "data" / "rngvault" / "store"
        assert list((tmp_path / "data" / "rngvault" / "store").rglob("*.snap"))


def test_the_http_store_takes_token_timeout_and_cache_from_the_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fetch cache is in the cache directory, not the data directory."""
    monkeypatch.setenv("RNGVAULT_TOKEN", "from-env")
    monkeypatch.setenv("RNGVAULT_TIMEOUT", "3")
    store = HttpStore("http://127.0.0.1:9")
    assert (store._token, store._timeout) == ("from-env", 3.0)
    assert store.cache == tmp_path / "xdg-cache" / "rngvault" or sys.platform != "linux"
    assert store.cache == client_config().cache_dir
    assert store.cache != client_config().data_dir / "cache"
    given = HttpStore("http://127.0.0.1:9", token="", timeout=1.0)  # arguments win
    assert (given._token, given._timeout) == ("", 1.0)
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "home"))
    assert HttpStore("http://127.0.0.1:9").cache == tmp_path / "home" / "cache"


def test_a_bad_timeout_fails_the_http_store_with_the_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RNGVAULT_TIMEOUT", "-3")
    with pytest.raises(RngVaultError, match="RNGVAULT_TIMEOUT='-3'.*more than 0"):
        HttpStore("http://127.0.0.1:9")


def test_the_spool_lives_in_the_configured_directory_with_the_configured_cap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RNGVAULT_SPOOL", str(tmp_path / "spools"))
    monkeypatch.setenv("RNGVAULT_SPOOL_MAX_BYTES", "5")
    spool = Spool("http://127.0.0.1:9")
    assert spool.directory.parent == tmp_path / "spools"
    with pytest.raises(rngvault.StoreError, match="full .*RNGVAULT_SPOOL_MAX_BYTES"):
        spool.add("a/b", "s", 0, b"123456")
    assert spool.add("a/b", "s", 0, b"12345").is_file()
    monkeypatch.setenv("RNGVAULT_SPOOL_MAX_BYTES", "-1")
    with pytest.raises(RngVaultError, match="RNGVAULT_SPOOL_MAX_BYTES='-1'"):
        spool.add("a/b", "t", 0, b"1")


def test_open_store_without_a_store_uses_url_then_store_then_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "home"))
    default = open_store()
    assert isinstance(default, LocalStore)
    assert Path(default.location) == tmp_path / "home" / "store"
    monkeypatch.setenv("RNGVAULT_STORE", str(tmp_path / "mine"))
    assert Path(open_store().location) == tmp_path / "mine"
    monkeypatch.setenv("RNGVAULT_URL", str(tmp_path / "by-url"))
    assert Path(open_store().location) == tmp_path / "by-url"
    monkeypatch.setenv("RNGVAULT_URL", "http://127.0.0.1:9")
    assert isinstance(open_store(), HttpStore)


def test_fetch_without_a_url_needs_rngvault_url() -> None:
    with pytest.raises(rngvault.StoreError, match="pass url= or set RNGVAULT_URL"):
        rngvault.fetch("a/b", "s")


@pytest.mark.parametrize(
    ("name", "value"), [("RNGVAULT_EXIT_TIMEOUT", "later"), ("RNGVAULT_TIMEOUT", "0")]
)
def test_a_vault_fails_at_creation_on_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    """Not in the writer thread or at exit, where it could only be warned about."""
    monkeypatch.setenv(name, value)
    with pytest.raises(RngVaultError, match=f"{name}={value!r}"):
        rngvault.Vault(tmp_path / "store", run="a/b")


def test_the_command_reports_a_bad_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rngvault import cli

    monkeypatch.setenv("RNGVAULT_TIMEOUT", "soon")
    status = cli.main(["--url", "http://127.0.0.1:9", "runs"])
    err = capsys.readouterr().err
    assert status == 1
    assert "RNGVAULT_TIMEOUT='soon' is not a number of seconds" in err
    assert "Traceback" not in err
