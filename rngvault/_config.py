"""The client's configuration: every ``RNGVAULT_*`` variable the client reads, read here.

=========================  ==========================================  ======================
variable                   meaning                                     default
=========================  ==========================================  ======================
RNGVAULT_URL               the store when none is given: a server URL  the local store
                           or a directory
RNGVAULT_TOKEN             the server token                            none
RNGVAULT_TIMEOUT           seconds each server request may take        10
RNGVAULT_EXIT_TIMEOUT      seconds exit waits for pending snapshots    10
RNGVAULT_HOME              the data directory; its ``cache`` the       the platform's
                           cache directory                             (``rngvault._paths``)
RNGVAULT_STORE             the local store                             ``<data dir>/store``
RNGVAULT_SPOOL             where spools live                           ``<data dir>/spool``
RNGVAULT_SPOOL_MAX_BYTES   the spool's total size cap, in bytes        1073741824 (1 GiB)
=========================  ==========================================  ======================

One policy for all of them: an empty variable counts as unset, and a value that cannot be
used is an ``RngVaultError`` naming the variable, its value and what it accepts, raised
by the ``client_config()`` call that read it (``Vault(...)`` reads it when it starts), never
replaced by a default. Arguments given in code (``Vault(store, token=...)``,
``HttpStore(timeout=...)``) win over the variables. The ``rngvault`` command reads
``RNGVAULT_URL`` and ``RNGVAULT_TOKEN`` through click, which also treats an empty one as
unset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rngvault._errors import RngVaultError
from rngvault._paths import platform_cache_dir, platform_data_dir

DEFAULT_TIMEOUT = 10.0
DEFAULT_EXIT_TIMEOUT = 10.0
DEFAULT_SPOOL_MAX_BYTES = 2**30


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The client's settings, from the environment (see the module docstring).

    Attributes:
        url: the store to use when none is given (a server URL or a directory), or None.
        token: the server token, or None (left out of the repr).
        timeout: seconds each server request may take.
        exit_timeout: seconds interpreter exit waits for pending snapshots.
        data_dir: where the local store and the spool live by default.
        cache_dir: where snapshots fetched from a server are cached (a cache: deleting it
            only makes the next fetches slower).
        store: the local store used when no store is given and ``url`` is None.
        spool_dir: where the spools of every server live.
        spool_max_bytes: the cap on the total size of a server's spool.
    """

    url: str | None
    token: str | None = field(repr=False)
    timeout: float
    exit_timeout: float
    data_dir: Path
    cache_dir: Path
    store: Path
    spool_dir: Path
    spool_max_bytes: int


def client_config(environ: Mapping[str, str] | None = None) -> ClientConfig:
    """The configuration that ``environ`` (default: this process's environment) gives.

    Raises:
        RngVaultError: a variable holds a value that cannot be used; the message names it.
    """
    env = os.environ if environ is None else environ

    def text(name: str) -> str | None:
        return env.get(name) or None

    def path(name: str) -> Path | None:
        value = text(name)
        return Path(value).expanduser() if value else None

    home = path("RNGVAULT_HOME")
    data = home or platform_data_dir(env)
    return ClientConfig(
        url=text("RNGVAULT_URL"),
        token=text("RNGVAULT_TOKEN"),
        timeout=_seconds(env, "RNGVAULT_TIMEOUT", DEFAULT_TIMEOUT, zero=False),
        exit_timeout=_seconds(env, "RNGVAULT_EXIT_TIMEOUT", DEFAULT_EXIT_TIMEOUT, zero=True),
        data_dir=data,
        cache_dir=home / "cache" if home else platform_cache_dir(env),
        store=path("RNGVAULT_STORE") or data / "store",
        spool_dir=path("RNGVAULT_SPOOL") or data / "spool",
        spool_max_bytes=_bytes(env, "RNGVAULT_SPOOL_MAX_BYTES", DEFAULT_SPOOL_MAX_BYTES),
    )


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool) -> float:
    value = env.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        accepted = "0 or more" if zero else "more than 0"
        raise RngVaultError(
            f"{name}={value!r} is not a number of seconds: write a finite number, "
            f"{accepted} (default {default:g})"
        )
    return seconds


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    stripped = value.strip()
    if not (stripped.isascii() and stripped.isdigit() and len(stripped) <= 18):
        raise RngVaultError(
            f"{name}={value!r} is not a number of bytes: write a whole number, 0 or more "
            f"(default {default})"
        )
    return int(stripped)
