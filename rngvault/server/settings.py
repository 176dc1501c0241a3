"""Server settings: arguments first, then ``RNGVAULT_*`` environment variables, then defaults.

==========================  ===========================  ==================================
setting                     environment variable         default
==========================  ===========================  ==================================
``host``                    ``RNGVAULT_HOST``            ``127.0.0.1``
``port``                    ``RNGVAULT_PORT``            ``8000``
``db``                      ``RNGVAULT_DB``              ``sqlite:///<data dir>/rngvault.db``
``tokens``                  ``RNGVAULT_TOKENS``          ``<data dir>/tokens.json``
``max_body``                ``RNGVAULT_MAX_BODY``        16 MiB (bytes; ``16MiB`` works too)
``insecure_open``           ``RNGVAULT_INSECURE_OPEN``   off
``access_log``              ``RNGVAULT_ACCESS_LOG``      off (errors are always logged)
==========================  ===========================  ==================================

The data directory is rngvault's per-user one: ``$RNGVAULT_HOME``, else
``$XDG_DATA_HOME/rngvault`` (Linux), ``~/Library/Application Support/rngvault`` (macOS) or
``%LOCALAPPDATA%\\rngvault`` (Windows).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rngvault._errors import RngVaultError
from rngvault._paths import data_dir

_SIZE = re.compile(r"(\d+)\s*(|B|KiB|MiB|GiB)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY = 16 * 2**20


def parse_size(text: str) -> int:
    """``"16MiB"`` -> 16777216; plain digits are bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise RngVaultError(f"invalid size {text!r}: write bytes, or a number with KiB/MiB/GiB")
    return int(match[1]) * _UNITS[match[2].lower()]


def parse_bool(text: str, name: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise RngVaultError(f"invalid {name} {text!r}: write true or false")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Settings:
    """How a server runs.

    Attributes:
        host: the address to listen on.
        port: the TCP port.
        db: the database URL (``sqlite:///path`` or ``postgresql://user@host/db``).
        tokens: the tokens file; when it does not exist the server runs without tokens,
            which it allows only on a loopback host (or with ``insecure_open``).
        tokens_required: the tokens file was named explicitly, so it must exist.
        max_body: the largest request body accepted, in bytes (413 beyond).
        insecure_open: allow running without tokens on a non-loopback host.
        access_log: log every request (uvicorn's access log); off, only errors are logged.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: str = ""
    tokens: Path = Path()
    tokens_required: bool = False
    max_body: int = DEFAULT_MAX_BODY
    insecure_open: bool = False
    access_log: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **given: Any) -> Settings:
        """Settings from ``given`` (None means not given), else the environment, else defaults."""
        given = {k: v for k, v in given.items() if v is not None}
        env = {k[9:].lower(): v for k, v in environ.items() if k.startswith("RNGVAULT_")}
        data = data_dir()
        values: dict[str, Any] = {}
        try:
            values["host"] = given.get("host", env.get("host", DEFAULT_HOST))
            values["port"] = int(given.get("port", env.get("port", DEFAULT_PORT)))
            if not 0 <= values["port"] <= 65535:
                raise ValueError(f"port {values['port']} is outside 0..65535")
            values["db"] = given.get("db") or env.get("db") or f"sqlite:///{data / 'rngvault.db'}"
            tokens = given.get("tokens") or env.get("tokens")
            values["tokens"] = Path(tokens) if tokens else data / "tokens.json"
            values["tokens_required"] = tokens is not None
            max_body = given.get("max_body", env.get("max_body", DEFAULT_MAX_BODY))
            values["max_body"] = max_body if isinstance(max_body, int) else parse_size(max_body)
        except ValueError as exc:
            raise RngVaultError(f"invalid setting: {exc}") from None
        for flag in ("insecure_open", "access_log"):
            value = given.get(flag) or env.get(flag, "")
            values[flag] = value if isinstance(value, bool) else parse_bool(value, flag)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)
