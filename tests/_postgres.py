"""A throwaway PostgreSQL server for tests and benchmarks.

``PostgresServer`` runs Debian's PostgreSQL binaries (``initdb``, ``pg_ctl``) on a data
directory in a new temporary directory, listening on a free loopback port, with its socket
in that directory too. As root it runs them as the ``postgres`` user, since PostgreSQL
refuses to run as root. ``stop`` shuts the server down and removes the directory. For fault
tests, ``down``/``up`` stop and restart it on the same port and data, and ``freeze``/``thaw``
stop and continue its processes (SIGSTOP/SIGCONT: connections stay open, nothing answers).

``unavailable()`` says why no server can start here (no binaries, no psycopg), or None.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
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
            self.up()
        except BaseException:
            self.stop()
            raise
        return self

    def up(self) -> None:
        """Start the server on its data directory; returns once it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={self.max_connections}"
        )
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", log, "-o", options, "-w", "start")
        self._started = True

    def down(self) -> None:
        """Stop the server (fast shutdown), keeping its data and port for ``up``."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        self._started = False

    def _pids(self) -> list[int]:
        """The postmaster first, then its children (backends and background processes)."""
        pidfile = self.root / "data" / "postmaster.pid"
        if not pidfile.exists():
            return []  # not running
        postmaster = int(pidfile.read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # The parent pid is the 2nd field after the ")" closing the command name.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def _signal(self, signum: int) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):  # a child that just exited
                os.kill(pid, signum)

    def freeze(self) -> None:
        """SIGSTOP the server's processes, the postmaster first so it starts no new ones."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the server's processes (harmless when they are not stopped)."""
        self._signal(signal.SIGCONT)

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
                self.thaw()
                self.down()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
