"""A real rngvault server in a subprocess, for the tests that need one.

``ServerProcess`` runs ``python -m rngvault serve`` on a free loopback port and waits for
/healthz; it can be paused (SIGSTOP: connections open, nothing answers), resumed, killed
with SIGKILL and restarted on the same database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``python -m rngvault serve`` in a subprocess on a loopback port.

    Attributes:
        db: the SQLite file.
        url: the base URL once started (kept across restarts).
    """

    def __init__(
        self,
        home: Path,
        db: Path,
        *extra: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        files: int | None = None,
    ) -> None:
        self.home = home
        self.db = db
        self.extra = extra
        self.env = env or {}
        self.files = files  # the server's limit on open files (soft and hard), if given
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {**os.environ, "RNGVAULT_HOME": str(self.home), **self.env}
        command = [
            sys.executable,
            "-m",
            "rngvault",
            "serve",
            "--port",
            str(self.port),
            "--db",
            f"sqlite:///{self.db}",
            *self.extra,
        ]
        with open(self.home / f"server-{self.port}.log", "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._limits
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz in {timeout}s: {self.log()}")

    def _limits(self) -> None:
        if self.files is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (self.files, self.files))

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.home.glob("server-*.log"))

    def pause(self) -> None:
        """SIGSTOP: the socket stays open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
