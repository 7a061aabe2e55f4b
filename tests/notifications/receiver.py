"""A subscriber on loopback: a real HTTP server that verifies each notification with the
PyPI ``standardwebhooks`` library and answers with scripted status codes."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

NOTIFY_SECRET = "whsec_" + "bm90aWZ5LXNlY3JldC1mb3ItbW9kYWxodWItdGVzdHM="


@dataclass(frozen=True)
class Received:
    path: str
    webhook_id: str
    body: dict[str, Any]
    answered: int
    verified: bool


class Receiver:
    """``answers`` are used in order, one per request; after them every request gets 200."""

    def __init__(
        self, *answers: int, secret: str = NOTIFY_SECRET, port: int = 0, error_body: bytes = b""
    ) -> None:
        self.answers = list(answers)
        self.error_body = error_body  # sent with every answer that is not a 2xx
        self.received: list[Received] = []
        self.verifier = Webhook(secret)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hooks/jobs") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    receiver.verifier.verify(raw, headers)
                    verified = True
                except Exception:
                    verified = False
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    if not verified:
                        status = 401
                    receiver.received.append(
                        Received(
                            self.path,
                            headers.get("webhook-id", ""),
                            json.loads(raw),
                            status,
                            verified,
                        )
                    )
                body = b"" if 200 <= status < 300 else receiver.error_body
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                # The hub stops reading early, as it should for a long error body.
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def wait_for(self, count: int, *, within: float = 20.0, delivered: bool = True) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            seen = len(self.delivered()) if delivered else len(self.received)
            if seen >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"{seen} of {count} notifications after {within} s: {self.received}")
