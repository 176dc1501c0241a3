"""A throwaway PostgreSQL server for tests and benchmarks.

``PostgresServer`` runs Debian's PostgreSQL binaries (``initdb``, ``pg_ctl``) on a data
directory in a new temporary directory, listening on a free loopback port, with its socket
in that directory too. As root it runs them as the ``postgres`` user, since PostgreSQL
refuses to run as root. ``stop`` shuts the server down and removes the directory.

``unavailable()`` says why no server can start here (no binaries, no psycopg), or None.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

HOW_TO = (
    "install PostgreSQL's server binaries (Debian: apt-get install -y postgresql; "
    "scripts/test does this when run as root) and pip install 'rngvault[postgres]'"
)


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, or Debian's newest version."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return f"psycopg is not installed: {HOW_TO}"
    if find_bindir() is None:
        return f"no PostgreSQL server binaries (initdb, pg_ctl) found: {HOW_TO}"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return f"running as root and there is no 'postgres' user to run initdb: {HOW_TO}"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server of its own in a temporary directory.

    Attributes:
        port: its loopback TCP port.
        root: the temporary directory (data, socket, log).
    """

    def __init__(self, *, max_connections: int = 200) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(f"no PostgreSQL server binaries: {HOW_TO}")
        self.bindir = bindir
        self.max_connections = max_connections
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="rngvault-pg-"))
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        self._started = False

    def _run(self, *command: str) -> None:
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> PostgresServer:
        """initdb and start the server; wait until it accepts connections."""
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        try:
            self._run(
                "initdb", "-D", str(data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                f"-c max_connections={self.max_connections}"
            )
            log = str(self.root / "server.log")
            self._run("pg_ctl", "-D", str(data), "-l", log, "-o", options, "-w", "start")
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"rngvault_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by ``create_database``, closing its connections."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        try:
            if self._started:
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
                self._started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
