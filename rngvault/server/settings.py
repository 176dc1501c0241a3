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
``blobs``                   ``RNGVAULT_BLOBS``           none (state blobs in the database)
==========================  ===========================  ==================================

``Settings`` is a pydantic-settings model: ``Settings(**values)`` reads the variables of
this process, ``Settings.from_env(environ, **given)`` those of ``environ``; an argument
given (not None) wins over its variable, and an empty variable counts as unset. Every
value is checked, and a bad one is a one-line ``RngVaultError`` naming the setting.

The data directory is the server's per-user one: ``$RNGVAULT_HOME``, else the platform's
(platformdirs): ``$XDG_DATA_HOME/rngvault`` or ``~/.local/share/rngvault`` (Linux),
``~/Library/Application Support/rngvault`` (macOS), ``%LOCALAPPDATA%\\rngvault`` (Windows).
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rngvault._errors import RngVaultError

_SIZE = re.compile(r"(\d+)\s*(|B|KiB|MiB|GiB)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
PREFIX = "RNGVAULT_"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY = 16 * 2**20
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEP_ALIVE = 5.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# The variables Settings reads: os.environ, or the mapping from_env was given.
_ENVIRON: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("environ")


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The server's per-user data directory (``$RNGVAULT_HOME`` overrides it)."""
    environ = _ENVIRON.get(os.environ) if environ is None else environ
    override = environ.get("RNGVAULT_HOME")
    if override:
        return Path(override).expanduser()
    return platformdirs.user_data_path("rngvault", appauthor=False)


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


def host_of(header: str) -> str:
    """The host name of a ``Host`` header, without its port: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


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


class _Variables(PydanticBaseSettingsSource):
    """The settings' ``RNGVAULT_*`` variables (empty ones count as unset)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value = _ENVIRON.get(os.environ).get(PREFIX + field_name.upper()) or None
        if field_name == "tokens_required":  # not a variable: whether RNGVAULT_TOKENS is set
            value = None
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _key, _complex = self.get_field_value(field, name)
            if value is not None:
                found[name] = value
        return found


def _one_line(exc: ValidationError) -> RngVaultError:
    """The first problem of a ValidationError, naming the setting."""
    error = exc.errors()[0]
    name = ".".join(map(str, error["loc"])) or "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] not in ("value_error", "assertion_error"):
        message = f"{message} (got {error.get('input')!r})"
    return RngVaultError(f"invalid setting {name}: {message}")


class Settings(BaseSettings):
    """How a server runs.

    Attributes:
        host: the address to listen on.
        port: the TCP port.
        db: the database: a URL (``sqlite:///relative.db``, ``sqlite:////absolute.db``,
            ``postgresql://user@host/db``) or a plain path of an SQLite file.
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
        blobs: ``s3://BUCKET/PREFIX``: keep large whole state blobs in that S3 bucket (its
            endpoint and credentials from the ``AWS_*`` variables); None keeps every blob
            in the database.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=False)

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: str = Field(default_factory=lambda: f"sqlite:///{data_dir() / 'rngvault.db'}")
    tokens: Path = Field(default_factory=lambda: data_dir() / "tokens.json")
    tokens_required: bool = False
    max_body: int = DEFAULT_MAX_BODY
    insecure_open: bool = False
    access_log: bool = False
    allowed_hosts: tuple[str, ...] = ()
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive: float = DEFAULT_KEEP_ALIVE
    blobs: str | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _one_line(exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _Variables(settings_cls))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **given: Any) -> Settings:
        """Settings from ``given`` (None means not given), else ``environ``'s ``RNGVAULT_*``
        variables, else defaults: the database and tokens file in the data directory. A
        tokens file named by either must exist (``tokens_required``)."""
        given = {k: v for k, v in given.items() if v is not None}
        for name in ("db", "tokens"):
            if given.get(name) == "":
                raise RngVaultError(
                    f"invalid setting {name}: it is empty; name a database or file, or leave it out"
                )
        given.setdefault(
            "tokens_required", "tokens" in given or bool(environ.get(PREFIX + "TOKENS"))
        )
        reset = _ENVIRON.set(environ)
        try:
            return cls(**given)
        finally:
            _ENVIRON.reset(reset)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (checked as the settings are)."""
        try:
            return self.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise _one_line(exc) from None

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> int:
        port = _number(value, int)
        if not 0 <= port <= 65535:
            raise ValueError(f"{port} is outside 0..65535")
        return port

    @field_validator("db", mode="before")
    @classmethod
    def _db(cls, value: Any) -> str:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"write a database URL or an SQLite file's path, not {value!r}")
        return os.fspath(value)

    @field_validator("max_body", mode="before")
    @classmethod
    def _max_body(cls, value: Any) -> int:
        if isinstance(value, str):
            try:
                value = parse_size(value)
            except RngVaultError as exc:
                raise ValueError(str(exc)) from None
        return _positive(value, int)

    @field_validator("insecure_open", "access_log", "tokens_required", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"write true or false, not {value!r}")

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> tuple[str, ...]:
        text = value if isinstance(value, str) else ",".join(value)
        names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
        for name in names:
            if name != "*" and not re.fullmatch(r"[a-z0-9.\-:\[\]]+", name):
                raise ValueError(f"allowed host {name!r} is not a host name or address")
        # as requests are compared: without a port or brackets ([fe80::1]:80 -> fe80::1)
        return tuple(n if n == "*" else host_of(n) for n in names)

    @field_validator("max_connections", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        return _positive(value, int)

    @field_validator("blobs", mode="before")
    @classmethod
    def _blobs(cls, value: Any) -> str | None:
        if value is None:
            return None
        from rngvault.server.storage.blobs import BlobsUrlError, parse_blobs_url

        try:
            parse_blobs_url(value)
        except BlobsUrlError as exc:
            raise ValueError(str(exc)) from None
        return str(value)

    @field_validator("header_timeout", "keep_alive", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        return _positive(value, float)


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or (isinstance(value, float) and kind is int):
        raise ValueError(f"write a whole number, not {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"write a number, not {value!r}") from None


def _positive(value: Any, kind: type) -> Any:
    number = _number(value, kind)
    if not 0 < number < 2**31:  # also refuses NaN and infinity
        raise ValueError(f"must be a positive number, got {value!r}")
    return number
