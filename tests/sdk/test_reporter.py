"""Tests for modalhub_sdk.reporter against a scripted hub on loopback.

Every request the hub receives is checked with modalhub_sdk's ``Verifier`` (both rotation
secrets) and with the PyPI ``standardwebhooks`` library. Tests wait on events and conditions
with deadlines; the only clock assertions bound how long reporting may delay a function.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import itertools
import json
import logging
import socket
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest
from standardwebhooks.webhooks import Webhook

from modalhub_sdk import HubReporter, report_progress, report_to_hub
from modalhub_sdk import reporter as reporter_module
from modalhub_sdk.signing import Verifier

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
PLAIN_SECRET = "a-plain-rotation-secret-0123456789"
CALL_ID = "fc-01JTESTCALL"
CALLBACK_PATH = "/api/v3/webhooks/modal/completion"
ENV_NAMES = (
    "WEBHOOK_BASE_URL",
    "MODALHUB_WEBHOOK_BASE_URL",
    "MODAL_WEBHOOK_SECRET",
    "MODALHUB_WEBHOOK_SECRET",
    "MODALHUB_CALL_ID",
    "MODALHUB_JOB_ID",
    "MODALHUB_BATCH_ID",
    "MODALHUB_APP",
    "MODALHUB_FUNCTION",
)
SLACK = 0.75  # seconds a bounded delivery may overrun its budget on a loaded machine


# --- a scripted hub --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 202
    retry_after: str | None = None
    action: Literal["answer", "hang", "close"] = "answer"


@dataclass(frozen=True)
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def type(self) -> str:
        return str(self.event["type"])


class ScriptedHub:
    """A hub on 127.0.0.1 that records every request and answers from a per-event-type script
    (then ``default``): an HTTP status with an optional Retry-After, a hang, or a closed
    connection without an answer."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, deque[Answer]] = {}
        self.default = Answer()
        self.release = threading.Event()
        self._cond = threading.Condition()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each keep-alive answer waits ~40 ms

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {key.lower(): value for key, value in self.headers.items()}
                answer = hub._record(Received(time.monotonic(), self.path, headers, body))
                if answer.action != "answer":
                    if answer.action == "hang":
                        hub.release.wait(10)
                    self.close_connection = True
                    return
                payload = b'{"status":"accepted"}'
                self.send_response(answer.status)
                if answer.retry_after is not None:
                    self.send_header("Retry-After", answer.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def script(self, event_type: str, *answers: Answer) -> None:
        self.scripts[event_type] = deque(answers)

    def _record(self, received: Received) -> Answer:
        with self._cond:
            self.received.append(received)
            self._cond.notify_all()
            queue = self.scripts.get(received.type)
            return queue.popleft() if queue else self.default

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(map(predicate, self.received)), timeout)

    def requests(self, event_type: str | None = None) -> list[Received]:
        """Received requests (of one type), each checked: path, content type, both verifiers."""
        with self._cond:
            received = list(self.received)
        for request in received:
            assert request.path == CALLBACK_PATH
            assert request.headers["content-type"] == "application/json"
            for secret in (SECRET, PLAIN_SECRET):
                verified = Verifier(secret).verify(request.body, request.headers)
                assert verified.event_id == request.headers["webhook-id"]
            Webhook(SECRET).verify(request.body, request.headers)
        return [r for r in received if event_type is None or r.type == event_type]

    def events(self) -> list[dict[str, Any]]:
        return [request.event for request in self.requests()]

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def _percents(events: list[dict[str, Any]]) -> list[float]:
    return [e["progress"]["percent"] for e in events if e["type"] == "function.progress"]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "modalhub_sdk" and record.levelno == logging.WARNING
    ]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "modal", raising=False)
    monkeypatch.setattr(reporter_module, "_warned", set())
    yield
    # No reporter thread may outlive its call by more than its current, bounded attempt.
    deadline = time.monotonic() + 3
    for thread in threading.enumerate():
        if thread.name.startswith("modalhub-"):
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} still running"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedHub]:
    server = ScriptedHub()
    monkeypatch.setenv("WEBHOOK_BASE_URL", server.url)
    monkeypatch.setenv("MODAL_WEBHOOK_SECRET", f"{SECRET}, {PLAIN_SECRET}")
    monkeypatch.setenv("MODALHUB_CALL_ID", CALL_ID)
    monkeypatch.setenv("MODALHUB_JOB_ID", "job-abc123")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- lifecycle -------------------------------------------------------------------------------


def test_success_sends_started_progress_and_success_in_order(hub: ScriptedHub) -> None:
    @report_to_hub
    def predict(sequence: str, *, scale: float = 1.0) -> dict[str, Any]:
        report_progress(10, "folding")
        return {"affinity": 0.63 * scale, "sequence": sequence}

    assert predict("MKV", scale=2.0) == {"affinity": 1.26, "sequence": "MKV"}

    events = hub.events()
    assert _types(events) == ["function.started", "function.progress", "function.success"]
    _, progress, success = events
    assert progress["progress"] == {"percent": 10.0, "message": "folding"}
    assert success["result"] == {"affinity": 1.26, "sequence": "MKV"}
    assert success["status"] == "success"
    assert success["error"] is None
    assert success["execution_time"] >= 0
    for event in events:
        assert event["call_id"] == CALL_ID
        assert event["metadata"]["job_id"] == "job-abc123"
        assert event["metadata"]["function"] == "predict"
        assert event["metadata"]["timestamp"].endswith("Z")
    ids = [r.headers["webhook-id"] for r in hub.requests()]
    assert ids[0] == f"{CALL_ID}:function.started"
    assert ids[1].startswith(f"{CALL_ID}:function.progress:")
    assert ids[2] == f"{CALL_ID}:function.success"


def test_decorator_keeps_name_signature_and_kind() -> None:
    def predict(sequence: str, *, scale: float = 1.0) -> dict[str, Any]:
        return {}

    async def predict_async(sequence: str) -> int:
        return 0

    wrapped = report_to_hub(timeout=60, soft_deadline_margin=5)(predict)
    assert wrapped.__name__ == "predict"
    assert wrapped.__qualname__ == predict.__qualname__
    assert wrapped.__wrapped__ is predict  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(predict)
    assert not inspect.iscoroutinefunction(wrapped)
    assert inspect.iscoroutinefunction(report_to_hub(predict_async))


def test_failure_reports_the_error_and_reraises_it(hub: ScriptedHub) -> None:
    class FoldingError(RuntimeError):
        pass

    raised = FoldingError("sequence too long")

    @report_to_hub
    def predict() -> None:
        raise raised

    with pytest.raises(FoldingError) as info:
        predict()
    assert info.value is raised

    events = hub.events()
    assert _types(events) == ["function.started", "function.failure"]
    failure = events[1]
    assert failure["status"] == "failure"
    assert failure["result"] is None
    assert failure["error"]["type"].endswith("FoldingError")
    assert failure["error"]["message"] == "sequence too long"
    assert "FoldingError: sequence too long" in failure["error"]["traceback"]
    assert "in predict" in failure["error"]["traceback"]


def test_unserialisable_result_is_sent_as_repr(
    hub: ScriptedHub, caplog: pytest.LogCaptureFixture
) -> None:
    class Structure:
        def __repr__(self) -> str:
            return "Structure(chains=2)"

    structure = Structure()

    @report_to_hub
    def predict() -> Structure:
        return structure

    assert predict() is structure
    success = hub.events()[-1]
    assert success["type"] == "function.success"
    assert success["result"]["repr"] == "Structure(chains=2)"
    assert success["result"]["type"].endswith("Structure")
    assert any("not JSON-serialisable" in message for message in _warnings(caplog))


def test_nested_reported_functions_report_once(hub: ScriptedHub) -> None:
    @report_to_hub
    def inner() -> int:
        report_progress(20, "inner step")
        return 1

    @report_to_hub
    def outer() -> int:
        return inner() + 1

    assert outer() == 2
    events = hub.events()
    assert _types(events) == ["function.started", "function.progress", "function.success"]
    assert events[2]["result"] == 2
    assert events[2]["metadata"]["function"] == "outer"


def test_decorator_refuses_bad_arguments_at_decoration_time() -> None:
    with pytest.raises(ValueError, match="soft_deadline_margin"):
        report_to_hub(timeout=10, soft_deadline_margin=20)
    with pytest.raises(ValueError, match="budget"):
        report_to_hub(delivery_budget=0)

    def frames() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        report_to_hub(frames)


# --- progress --------------------------------------------------------------------------------


def test_progress_is_throttled_and_the_latest_value_is_flushed(hub: ScriptedHub) -> None:
    @report_to_hub(min_progress_interval=30)
    def train() -> str:
        report_progress(1, "step 1")
        assert hub.wait_for(lambda r: r.type == "function.progress")
        for step in range(2, 401):  # 399 values within the interval, never 25 points apart
            report_progress(1 + step * 0.05, f"step {step}")
        return "trained"

    assert train() == "trained"
    events = hub.events()
    assert _types(events) == [
        "function.started",
        "function.progress",
        "function.progress",
        "function.success",
    ]
    assert _percents(events) == [1.0, 1 + 400 * 0.05]
    assert events[2]["progress"]["message"] == "step 400"
    ids = {r.headers["webhook-id"] for r in hub.requests("function.progress")}
    assert len(ids) == 2


def test_progress_jumps_and_100_skip_the_throttle(hub: ScriptedHub) -> None:
    def arrived(percent: float) -> Callable[[Received], bool]:
        return lambda r: r.type == "function.progress" and r.event["progress"]["percent"] == percent

    @report_to_hub(min_progress_interval=30)
    def train() -> None:
        report_progress(1)
        assert hub.wait_for(arrived(1))
        report_progress(10)  # waits for the interval, then is superseded
        report_progress(40)  # 39 points since the last sent value
        assert hub.wait_for(arrived(40))
        report_progress(100, "done")
        assert hub.wait_for(arrived(100))

    started = time.monotonic()
    train()
    assert time.monotonic() - started < 5  # far less than the 30 s interval
    assert _percents(hub.events()) == [1.0, 40.0, 100.0]


def test_progress_from_a_thread_started_by_the_function(hub: ScriptedHub) -> None:
    @report_to_hub
    def job() -> None:
        worker = threading.Thread(target=report_progress, args=(30, "from a thread"))
        worker.start()
        worker.join()

    job()
    assert _percents(hub.events()) == [30.0]


def test_progress_values_are_clamped_and_junk_ignored(hub: ScriptedHub) -> None:
    @report_to_hub(min_progress_interval=0)
    def job() -> None:
        report_progress(150)
        assert hub.wait_for(lambda r: r.type == "function.progress")
        report_progress(float("nan"))
        report_progress("half")  # type: ignore[arg-type]

    job()
    assert _percents(hub.events()) == [100.0]


def test_report_progress_outside_a_call_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    report_progress(10)
    report_progress(20)
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "outside" in warnings[0]


# --- delivery --------------------------------------------------------------------------------


def test_503_with_retry_after_is_retried_after_the_given_delay(hub: ScriptedHub) -> None:
    hub.script("function.success", Answer(503, retry_after="1"), Answer(503, retry_after="1"))

    @report_to_hub
    def predict() -> int:
        return 42

    started = time.monotonic()
    assert predict() == 42
    elapsed = time.monotonic() - started

    attempts = hub.requests("function.success")
    assert len(attempts) == 3
    assert {a.headers["webhook-id"] for a in attempts} == {f"{CALL_ID}:function.success"}
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    # Full-jitter backoff would retry within 0.5 s and 1 s; Retry-After asks for 1 s each.
    assert all(gap >= 0.95 for gap in gaps), gaps
    assert 1.9 <= elapsed < 2 + SLACK


def test_dead_hub_delays_the_function_by_at_most_the_budget(
    monkeypatch: pytest.MonkeyPatch, dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEBHOOK_BASE_URL", dead_url)
    monkeypatch.setenv("MODAL_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MODALHUB_CALL_ID", CALL_ID)

    @report_to_hub(delivery_budget=1.0, progress_budget=0.3)
    def predict() -> dict[str, float]:
        report_progress(50, "halfway")
        return {"affinity": 0.5}

    started = time.monotonic()
    assert predict() == {"affinity": 0.5}
    assert time.monotonic() - started < 1.0 + SLACK
    warnings = _warnings(caplog)
    assert any("gave up delivering function.success" in message for message in warnings)
    assert SECRET not in caplog.text
    assert "affinity" not in caplog.text


def test_hub_that_never_answers_is_bounded_too(hub: ScriptedHub) -> None:
    hub.default = Answer(action="hang")

    @report_to_hub(delivery_budget=1.0, progress_budget=0.3)
    def predict() -> str:
        return "ok"

    started = time.monotonic()
    assert predict() == "ok"
    assert time.monotonic() - started < 1.0 + SLACK
    assert hub.requests("function.success")


def test_hub_answering_500_is_retried_until_the_budget_ends(
    hub: ScriptedHub, caplog: pytest.LogCaptureFixture
) -> None:
    hub.default = Answer(500)

    @report_to_hub(delivery_budget=1.5, progress_budget=0.3)
    def predict() -> str:
        return "ok"

    started = time.monotonic()
    assert predict() == "ok"
    assert time.monotonic() - started < 1.5 + SLACK
    assert len(hub.requests("function.success")) >= 2
    assert any("HTTP 500" in message for message in _warnings(caplog))


def test_closed_connection_is_retried(hub: ScriptedHub) -> None:
    hub.script("function.success", Answer(action="close"))

    @report_to_hub
    def predict() -> str:
        return "ok"

    assert predict() == "ok"
    assert len(hub.requests("function.success")) == 2


@pytest.mark.parametrize("status", [400, 401, 413, 415, 422])
def test_4xx_is_not_retried(
    hub: ScriptedHub, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    hub.script("function.success", Answer(status))

    @report_to_hub
    def predict() -> str:
        return "ok"

    assert predict() == "ok"
    assert len(hub.requests("function.success")) == 1
    assert any(f"HTTP {status}" in message for message in _warnings(caplog))


# --- soft deadline ---------------------------------------------------------------------------


def test_soft_deadline_sends_timeout_then_the_late_result(hub: ScriptedHub) -> None:
    @report_to_hub(timeout=1.0, soft_deadline_margin=0.7)
    def long_job() -> str:
        # Still running at 0.3 s: the watchdog reports before Modal would stop us at 1 s.
        assert hub.wait_for(lambda r: r.type == "function.timeout")
        return "finished late"

    assert long_job() == "finished late"
    events = hub.events()
    assert _types(events) == ["function.started", "function.timeout", "function.success"]
    timeout = events[1]
    assert timeout["status"] == "timeout"
    assert timeout["execution_time"] >= 0.3
    assert timeout["error"]["type"] == "SoftDeadlineExceeded"
    assert "long_job" in timeout["error"]["traceback"]  # where the function was
    assert events[2]["result"] == "finished late"


# --- async -----------------------------------------------------------------------------------


async def test_async_function_is_reported_without_blocking_the_loop(hub: ScriptedHub) -> None:
    hub.script("function.success", Answer(503, retry_after="1"))

    @report_to_hub
    async def predict(x: int) -> int:
        report_progress(50, "halfway")
        await asyncio.sleep(0)
        return x * 2

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        assert await predict(21) == 42
    finally:
        ticking.cancel()
    assert ticks >= 10  # the loop ran during the 1 s retry wait
    events = hub.events()
    assert _types(events) == [
        "function.started",
        "function.progress",
        "function.success",
        "function.success",
    ]
    assert events[-1]["result"] == 42


async def test_async_failure_and_cancellation(hub: ScriptedHub) -> None:
    @report_to_hub
    async def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await broken()
    assert hub.events()[-1]["type"] == "function.failure"

    hub.received.clear()
    running = asyncio.Event()

    @report_to_hub
    async def endless() -> None:
        running.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(endless())
    await running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events = hub.events()
    assert _types(events) == ["function.started", "function.cancelled"]
    assert events[1]["error"]["type"].endswith("CancelledError")


# --- context manager -------------------------------------------------------------------------


def test_context_manager_reports_progress_and_result(
    hub: ScriptedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODALHUB_CALL_ID")
    with HubReporter(call_id="fc-ctx-1", metadata={"app": "boltz2"}) as reporter:
        assert reporter.enabled
        reporter.progress(50, "halfway")
        report_progress(75)  # goes to the same reporter
        reporter.succeed({"n": 1})

    events = hub.events()
    assert _types(events)[0] == "function.started"
    assert _types(events)[-1] == "function.success"
    assert {event["call_id"] for event in events} == {"fc-ctx-1"}
    assert events[-1]["result"] == {"n": 1}
    assert events[-1]["metadata"]["app"] == "boltz2"
    assert _percents(events)[-1] == 75.0


def test_context_manager_reports_failure_on_exception(
    hub: ScriptedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODALHUB_CALL_ID")
    with pytest.raises(KeyError), HubReporter(call_id="fc-ctx-2"):
        raise KeyError("missing")
    events = hub.events()
    assert _types(events) == ["function.started", "function.failure"]
    assert events[1]["error"]["type"] == "KeyError"


async def test_async_context_manager(hub: ScriptedHub) -> None:
    async with HubReporter() as reporter:
        reporter.succeed("done")
    assert _types(hub.events()) == ["function.started", "function.success"]


# --- call id and configuration ---------------------------------------------------------------


def test_call_id_prefers_modal_then_env_then_argument(
    hub: ScriptedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_modal = types.ModuleType("modal")
    fake_modal.current_function_call_id = lambda: "fc-from-modal"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modal", fake_modal)
    with HubReporter(call_id="fc-explicit") as reporter:
        assert reporter.call_id == "fc-from-modal"

    fake_modal.current_function_call_id = lambda: None  # type: ignore[attr-defined]
    with HubReporter(call_id="fc-explicit") as reporter:
        assert reporter.call_id == CALL_ID

    monkeypatch.delenv("MODALHUB_CALL_ID")
    with HubReporter(call_id="fc-explicit") as reporter:
        assert reporter.call_id == "fc-explicit"
    assert [e["call_id"] for e in hub.events()].count("fc-from-modal") == 2


@pytest.mark.parametrize("missing", ["WEBHOOK_BASE_URL", "MODAL_WEBHOOK_SECRET"])
def test_missing_configuration_runs_the_function_and_warns_once(
    hub: ScriptedHub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    missing: str,
) -> None:
    monkeypatch.delenv(missing)

    @report_to_hub(timeout=60, soft_deadline_margin=5)
    def predict(x: int) -> int:
        report_progress(50)
        return x + 1

    assert predict(1) == 2
    assert predict(2) == 3
    assert hub.requests() == []
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert missing in warnings[0]


def test_missing_call_id_runs_the_function_and_warns_once(
    hub: ScriptedHub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MODALHUB_CALL_ID")

    @report_to_hub
    def predict() -> str:
        return "ok"

    assert predict() == "ok"
    assert predict() == "ok"
    assert hub.requests() == []
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "call id" in warnings[0]
