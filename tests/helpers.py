"""Shared test helpers: signed callbacks, an in-process hub and a real hub process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from modalhub_sdk.signing import sign_standard

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLW1vZGFsaHViLXRlc3RzISE="
ADMIN_TOKEN = "test-operator-token-0123456789"
CALLBACK_PATH = "/api/v3/webhooks/modal/completion"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def event(type_: str = "function.success", call_id: str = "fc-1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "call_id": call_id}
    body.update(fields)
    return body


def signed(
    body: dict[str, Any] | bytes,
    *,
    event_id: str,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = sign_standard(raw, [secret], event_id=event_id, timestamp=timestamp)
    headers["content-type"] = "application/json"
    return raw, headers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HubProcess:
    """A real ``modalhub serve`` over loopback, which a test can kill -9 and restart."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "hub.log"
        self.env = {
            **os.environ,
            "MODALHUB_DATA_DIR": str(data_dir),
            "MODALHUB_WEBHOOK_SECRET": SECRET,
            "MODALHUB_ADMIN_TOKENS": ADMIN_TOKEN,
            "MODALHUB_LOG_FORMAT": "json",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modalhub",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill9 takes the worker too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hub did not become ready: {self.log_path.read_text()[-2000:]}")

    def kill9(self) -> None:
        """Kill the hub and its worker process at once, as when a pod dies."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
