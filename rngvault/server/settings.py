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
``allowed_hosts``           ``RNGVAULT_ALLOWED_HOSTS``   none beyond the loopback names
``max_connections``         ``RNGVAULT_MAX_CONNECTIONS`` 1000 (and below the file limit)
``header_timeout``          ``RNGVAULT_HEADER_TIMEOUT``  10 (seconds)
``keep_alive``              ``RNGVAULT_KEEP_ALIVE``      5 (seconds)
==========================  ===========================  ==================================

The data directory is rngvault's per-user one: ``$RNGVAULT_HOME``, else
``$XDG_DATA_HOME/rngvault`` (Linux), ``~/Library/Application Support/rngvault`` (macOS) or
``%LOCALAPPDATA%\\rngvault`` (Windows).
"""

from __future__ import annotations

import dataclasses
import functools
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
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEP_ALIVE = 5.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


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


@functools.lru_cache(maxsize=4096)  # asked on every request of an open server
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1, a dual-stack socket's view
    return address.is_loopback


def _host_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    for name in names:
        if name != "*" and not re.fullmatch(r"[a-z0-9.\-:\[\]]+", name):
            raise ValueError(f"allowed host {name!r} is not a host name or address")
    return names


def _positive(value: Any, name: str, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not 0 < number < 2**31:  # also refuses NaN and infinity
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


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
        allowed_hosts: more ``Host`` names an open server (no tokens) answers, besides
            ``localhost``, ``127.0.0.1`` and ``[::1]``; ``*`` allows any. Requests naming
            another host are refused (421), which keeps web pages from reaching an open
            server through DNS rebinding.
        max_connections: the most connections ``rngvault serve`` keeps open (capped below
            the process's file limit); past it, the connection idle longest is closed.
        header_timeout: seconds a connection may take to send a request's headers.
        keep_alive: seconds an idle keep-alive connection stays open.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: str = ""
    tokens: Path = Path()
    tokens_required: bool = False
    max_body: int = DEFAULT_MAX_BODY
    insecure_open: bool = False
    access_log: bool = False
    allowed_hosts: tuple[str, ...] = ()
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive: float = DEFAULT_KEEP_ALIVE

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
            for name in ("db", "tokens"):
                if given.get(name) == "":
                    raise ValueError(f"{name} is empty: name a database or file, or leave it out")
            values["db"] = given.get("db") or env.get("db") or f"sqlite:///{data / 'rngvault.db'}"
            tokens = given.get("tokens") or env.get("tokens")
            values["tokens"] = Path(tokens) if tokens else data / "tokens.json"
            values["tokens_required"] = tokens is not None
            max_body = given.get("max_body", env.get("max_body", DEFAULT_MAX_BODY))
            values["max_body"] = max_body if isinstance(max_body, int) else parse_size(max_body)
            hosts = given.get("allowed_hosts", env.get("allowed_hosts", ""))
            values["allowed_hosts"] = (
                _host_names(hosts) if isinstance(hosts, str) else _host_names(",".join(hosts))
            )
            for name, kind, default in (
                ("max_connections", int, DEFAULT_MAX_CONNECTIONS),
                ("header_timeout", float, DEFAULT_HEADER_TIMEOUT),
                ("keep_alive", float, DEFAULT_KEEP_ALIVE),
            ):
                values[name] = _positive(given.get(name, env.get(name, default)), name, kind)
        except ValueError as exc:
            raise RngVaultError(f"invalid setting: {exc}") from None
        for flag in ("insecure_open", "access_log"):
            value = given.get(flag, env.get(flag, ""))
            values[flag] = value if isinstance(value, bool) else parse_bool(value, flag)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)
