"""Report a Modal function's lifecycle to the hub (DESIGN.md, "Worker SDK surface").

Each reported call sends ``function.started``, throttled ``function.progress``, and one terminal
event: ``function.success``, ``function.failure`` or ``function.cancelled`` when the call ends,
and ``function.timeout`` from a watchdog shortly before Modal's hard timeout. Events are signed
with ``sign_standard`` and POSTed to ``{WEBHOOK_BASE_URL}/api/v3/webhooks/modal/completion``.

Reporting never changes what the function returns or raises, and every send is bounded: when the
hub is down, the end of a call is delayed by at most ``delivery_budget`` seconds. started and
progress go out from a background thread, so the function never waits for them.

This runs inside Modal containers: stdlib and httpx only. ``modal`` is never imported here; the
call id is read from the ``modal`` module already loaded when the function runs on Modal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import itertools
import json
import logging
import math
import os
import random
import re
import ssl
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar, cast, overload

import httpx

from modalhub_sdk.signing import parse_secrets, sign_standard

__all__ = ["HubReporter", "report_progress", "report_to_hub"]

logger = logging.getLogger("modalhub_sdk")

CALLBACK_PATH = "/api/v3/webhooks/modal/completion"
DEFAULT_DELIVERY_BUDGET = 30.0
DEFAULT_PROGRESS_BUDGET = 5.0
DEFAULT_MIN_PROGRESS_INTERVAL = 2.0
DEFAULT_SOFT_DEADLINE_MARGIN = 30.0
# A progress value this many points away from the last one sent skips the throttle (so does 100).
PROGRESS_JUMP = 25.0

_ATTEMPT_TIMEOUT = 10.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_RETRYABLE_4XX = frozenset({408, 425, 429})
# The hub's field limits (modalhub.ingest.schemas): longer values would be refused with a 422.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_MAX_PROGRESS_MESSAGE = 2_000
_MAX_ERROR_TYPE = 500
_MAX_ERROR_MESSAGE = 20_000
_MAX_TRACEBACK = 200_000
_MAX_NAME = 200
_MAX_REPR = 10_000

F = TypeVar("F", bound=Callable[..., Any])

_current: ContextVar[HubReporter | None] = ContextVar("modalhub_reporter", default=None)
# Reporters in progress in this process: report_progress() from a thread the function started
# (contextvars do not follow threads) falls back to the only one.
_active: list[HubReporter] = []
_active_lock = threading.Lock()
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    logger.warning(message)


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    call_id: str | None = None
    timeout: float | None = None
    soft_deadline_margin: float = DEFAULT_SOFT_DEADLINE_MARGIN
    metadata: Mapping[str, Any] | None = None
    function: str | None = None
    hub_url: str | None = None
    secret: str | None = None
    delivery_budget: float = DEFAULT_DELIVERY_BUDGET
    progress_budget: float = DEFAULT_PROGRESS_BUDGET
    min_progress_interval: float = DEFAULT_MIN_PROGRESS_INTERVAL

    def __post_init__(self) -> None:
        # Written as "not x > 0" so NaN is refused too.
        if not self.delivery_budget > 0 or not self.progress_budget > 0:
            raise ValueError("delivery_budget and progress_budget must be > 0 seconds")
        if not self.min_progress_interval >= 0:
            raise ValueError("min_progress_interval must be >= 0 seconds")
        if not self.soft_deadline_margin > 0:
            raise ValueError("soft_deadline_margin must be > 0 seconds")
        if self.timeout is not None and not self.timeout > self.soft_deadline_margin:
            raise ValueError(
                f"timeout ({self.timeout} s, the function's Modal timeout) must be greater than "
                f"soft_deadline_margin ({self.soft_deadline_margin} s)"
            )


@dataclass(frozen=True)
class _Hub:
    url: str
    keys: tuple[bytes, ...]


def _hub_config(options: _Options) -> _Hub | None:
    """The hub's endpoint and signing keys, or None (with one warning) when not configured."""
    env = os.environ.get
    url = (
        options.hub_url or env("WEBHOOK_BASE_URL") or env("MODALHUB_WEBHOOK_BASE_URL") or ""
    ).strip()
    secret = options.secret or env("MODAL_WEBHOOK_SECRET") or env("MODALHUB_WEBHOOK_SECRET") or ""
    missing = [
        name
        for name, value in (("WEBHOOK_BASE_URL", url), ("MODAL_WEBHOOK_SECRET", secret.strip()))
        if not value
    ]
    if missing:
        _warn_once(
            f"modalhub: reporting to the hub is disabled: {' and '.join(missing)} not set "
            "(attach modal.Secret.from_name('modalhub') to the function)"
        )
        return None
    if not url.startswith(("http://", "https://")):
        _warn_once(
            "modalhub: reporting to the hub is disabled: WEBHOOK_BASE_URL is not an http(s) URL"
        )
        return None
    try:
        keys = tuple(parse_secrets(secret))
    except ValueError as exc:  # the messages never contain the secret
        _warn_once(f"modalhub: reporting to the hub is disabled: MODAL_WEBHOOK_SECRET: {exc}")
        return None
    url = url.rstrip("/")
    return _Hub(url if url.endswith(CALLBACK_PATH) else url + CALLBACK_PATH, keys)


def _call_id(explicit: str | None) -> str | None:
    """Modal's call id when running on Modal, else ``MODALHUB_CALL_ID``, else ``explicit``."""
    # A function running on Modal was imported by Modal's runtime, so ``modal`` is loaded; when it
    # is not, we are not on Modal and importing it (if installed at all) would only cost time.
    modal = sys.modules.get("modal")
    found: object = None
    if modal is not None:
        try:
            found = modal.current_function_call_id()
        except Exception:
            found = None
    call_id = found or os.environ.get("MODALHUB_CALL_ID") or explicit
    if not call_id:
        _warn_once(
            "modalhub: reporting disabled: no call id (not running on Modal, MODALHUB_CALL_ID "
            "unset and no call_id= given)"
        )
        return None
    if not isinstance(call_id, str) or not _IDENTIFIER.fullmatch(call_id):
        _warn_once(f"modalhub: reporting disabled: call id {call_id!r} is not a valid identifier")
        return None
    return call_id


def _metadata(options: _Options) -> dict[str, Any]:
    env = os.environ.get
    standard = {
        "job_id": env("MODALHUB_JOB_ID"),
        "batch_id": env("MODALHUB_BATCH_ID"),
        "app": env("MODALHUB_APP"),
        "function": env("MODALHUB_FUNCTION") or options.function,
    }
    metadata = {**standard, **(options.metadata or {})}
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError):
        _warn_once("modalhub: metadata= is not JSON-serialisable; only the standard keys are sent")
        metadata = standard
    for key in ("job_id", "batch_id"):
        value = metadata.get(key)
        if value is not None and not (isinstance(value, str) and _IDENTIFIER.fullmatch(value)):
            _warn_once(f"modalhub: metadata {key} {value!r} is not a valid identifier; left out")
            metadata[key] = None
    for key in ("app", "function"):
        if isinstance(metadata.get(key), str):
            metadata[key] = metadata[key][:_MAX_NAME]
    return {key: value for key, value in metadata.items() if value is not None}


# --- delivery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    id: str
    type: str
    call_id: str
    body: bytes
    percent: float | None = None  # progress events only


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~50 ms: once per process rather than once per call.
    return httpx.create_ssl_context()


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _deliver(
    client: httpx.Client,
    hub: _Hub,
    event: _Event,
    budget: float,
    stop: threading.Event | None = None,
) -> bool:
    """POST ``event`` until the hub takes it, refuses it for good, ``budget`` seconds have passed
    or ``stop`` is set. Retries 5xx, 408/425/429, connection errors and timeouts with exponential
    backoff and full jitter, or after ``Retry-After`` when the hub gives one."""
    started = time.monotonic()
    deadline = started + budget
    attempt = 0
    while True:
        attempt += 1
        attempt_timeout = max(0.05, min(_ATTEMPT_TIMEOUT, deadline - time.monotonic()))
        # Signed per attempt: a fresh timestamp keeps late retries inside the hub's tolerance.
        headers = sign_standard(event.body, hub.keys, event_id=event.id)
        headers["Content-Type"] = "application/json"
        retry_after = None
        try:
            response = client.post(
                hub.url, content=event.body, headers=headers, timeout=attempt_timeout
            )
        except Exception as exc:  # connection refused or reset, timeouts, a closed client
            problem = type(exc).__name__
        else:
            status = response.status_code
            if 200 <= status < 300:  # 202 accepted, 200 duplicate
                logger.debug("modalhub: %s for call %s delivered", event.type, event.call_id)
                return True
            if status < 500 and status not in _RETRYABLE_4XX:
                logger.warning(
                    "modalhub: hub refused %s for call %s with HTTP %d (%s); not retried",
                    event.type,
                    event.call_id,
                    status,
                    response.text[:200],
                )
                return False
            problem = f"HTTP {status}"
            if status in (429, 503):
                retry_after = _retry_after(response)
        if retry_after is not None:
            delay = retry_after
        else:
            delay = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)))
        if time.monotonic() + delay >= deadline:
            logger.warning(
                "modalhub: gave up delivering %s for call %s after %d attempt(s) in %.1f s "
                "(last: %s)",
                event.type,
                event.call_id,
                attempt,
                time.monotonic() - started,
                problem,
            )
            return False
        logger.debug(
            "modalhub: %s for call %s: %s; retry in %.2f s",
            event.type,
            event.call_id,
            problem,
            delay,
        )
        if stop is None:
            time.sleep(delay)
        elif stop.wait(delay):
            return False


class _Outbox:
    """One background thread sending started and progress events in order.

    Progress is throttled to one send per ``min_interval`` seconds (100 % and jumps of
    ``PROGRESS_JUMP`` points excepted); a newer value replaces one still waiting, so memory stays
    constant and the hub gets the latest value. ``close`` sends what waits, then stops.
    """

    def __init__(
        self,
        send: Callable[[_Event, threading.Event], object],
        min_interval: float,
        stop: threading.Event,
    ) -> None:
        self._send = send
        self._min_interval = min_interval
        self._stop = stop
        self._cond = threading.Condition()
        self._queue: deque[_Event] = deque()
        self._progress: _Event | None = None
        self._urgent = False
        self._next_progress_at = 0.0
        self._last_percent: float | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="modalhub-outbox", daemon=True)
        self._thread.start()

    def put(self, event: _Event) -> None:
        with self._cond:
            if self._closing:
                return
            if event.percent is None:
                self._queue.append(event)
            else:
                last = self._last_percent
                self._progress = event
                self._urgent = event.percent >= 100 or (
                    last is not None and abs(event.percent - last) >= PROGRESS_JUMP
                )
            self._cond.notify()

    def close(self, timeout: float) -> None:
        """Send what is waiting (progress unthrottled) for up to ``timeout`` s, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        self._stop.set()  # a send still retrying gives up after its current attempt

    def _next(self) -> _Event | None:
        with self._cond:
            while not self._stop.is_set():
                if self._queue:
                    return self._queue.popleft()
                if self._progress is not None:
                    now = time.monotonic()
                    wait = 0.0 if self._closing or self._urgent else self._next_progress_at - now
                    if wait <= 0:
                        event, self._progress = self._progress, None
                        self._last_percent = event.percent
                        self._next_progress_at = now + self._min_interval
                        return event
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        while (event := self._next()) is not None:
            self._send(event, self._stop)


# --- events --------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__} whose str() failed>"


def _type_name(kind: type) -> str:
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _error(exc: BaseException) -> dict[str, str]:
    trace = "".join(traceback.format_exception(exc))
    return {
        "type": _type_name(type(exc))[:_MAX_ERROR_TYPE],
        "message": _text(exc)[:_MAX_ERROR_MESSAGE],
        "traceback": trace[-_MAX_TRACEBACK:],  # the end of a traceback says the most
    }


def _is_cancellation(exc: BaseException) -> bool:
    # Modal cancels an input with asyncio.CancelledError (async functions) or
    # modal.exception.InputCancellation, a BaseException, raised in sync ones.
    kind = type(exc)
    return isinstance(exc, asyncio.CancelledError) or (
        kind.__name__ == "InputCancellation" and kind.__module__.startswith("modal")
    )


def _result_for_json(result: Any) -> Any:
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        kind = _type_name(type(result))
        _warn_once(
            f"modalhub: a {kind} result is not JSON-serialisable ({type(exc).__name__}); "
            'the hub receives {"repr": ..., "type": ...} instead'
        )
        try:
            text = repr(result)
        except Exception:
            text = f"<{kind} whose repr() failed>"
        return {"repr": text[:_MAX_REPR], "type": kind}
    return result


# --- the reporter --------------------------------------------------------------------------


class HubReporter:
    """Report one call to the hub: the engine of ``@report_to_hub``, usable on its own::

        with HubReporter(timeout=3600) as reporter:
            reporter.progress(50, "halfway")
            reporter.succeed(result)

    Entering sends ``function.started`` (from a background thread). Leaving sends
    ``function.success`` with the value given to ``succeed`` (None if it was never called), or
    ``function.failure`` when the block raised an exception, which propagates unchanged, or
    ``function.cancelled`` for a Modal input cancellation. ``async with`` works too; the final
    send then runs in a worker thread, off the event loop. Nothing here raises because of the
    hub: without configuration or a call id the reporter is disabled and does nothing.

    The call id is Modal's (``modal.current_function_call_id()``) when running on Modal, else
    ``MODALHUB_CALL_ID``, else ``call_id``. ``timeout`` is the function's Modal timeout: when
    ``timeout - soft_deadline_margin`` seconds have passed, ``function.timeout`` is sent.
    ``hub_url`` and ``secret`` default to ``WEBHOOK_BASE_URL`` and ``MODAL_WEBHOOK_SECRET``.
    The final event(s) may take up to ``delivery_budget`` seconds when the hub is slow or down;
    each progress event up to ``progress_budget``; progress is sent at most once per
    ``min_progress_interval`` seconds. One instance reports one call.
    """

    call_id: str | None

    def __init__(
        self,
        *,
        call_id: str | None = None,
        timeout: float | None = None,
        soft_deadline_margin: float = DEFAULT_SOFT_DEADLINE_MARGIN,
        metadata: Mapping[str, Any] | None = None,
        function: str | None = None,
        hub_url: str | None = None,
        secret: str | None = None,
        delivery_budget: float = DEFAULT_DELIVERY_BUDGET,
        progress_budget: float = DEFAULT_PROGRESS_BUDGET,
        min_progress_interval: float = DEFAULT_MIN_PROGRESS_INTERVAL,
    ) -> None:
        self._setup(
            _Options(
                call_id=call_id,
                timeout=timeout,
                soft_deadline_margin=soft_deadline_margin,
                metadata=metadata,
                function=function,
                hub_url=hub_url,
                secret=secret,
                delivery_budget=delivery_budget,
                progress_budget=progress_budget,
                min_progress_interval=min_progress_interval,
            )
        )

    @classmethod
    def _with_options(cls, options: _Options) -> HubReporter:
        reporter = cls.__new__(cls)
        reporter._setup(options)
        return reporter

    def _setup(self, options: _Options) -> None:
        self._options = options
        self.call_id = None
        self._begun_at: float | None = None
        self._thread_id = 0
        self._token: Token[HubReporter | None] | None = None
        self._result: Any = None
        self._hub: _Hub | None = None
        self._client: httpx.Client | None = None
        self._outbox: _Outbox | None = None
        self._watchdog: threading.Timer | None = None
        self._stop_background = threading.Event()
        self._metadata: dict[str, Any] = {}
        self._run_id = uuid.uuid4().hex[:8]
        self._progress_seq = itertools.count(1)

    @property
    def enabled(self) -> bool:
        """Whether events are being sent (configuration and a call id were found)."""
        return self._outbox is not None

    def succeed(self, result: Any = None) -> None:
        """Set the result sent with ``function.success`` when the block exits without error."""
        self._result = result

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0-100, clamped); returns at once, the send happens in the background."""
        outbox = self._outbox
        if outbox is None or self.call_id is None:
            return
        try:
            value = float(percent)
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value):
            _warn_once(f"modalhub: progress percent {percent!r} is not a number; ignored")
            return
        value = min(100.0, max(0.0, value))
        event_id = f"{self.call_id}:function.progress:{self._run_id}:{next(self._progress_seq)}"
        progress = {
            "percent": value,
            "message": None if message is None else _text(message)[:_MAX_PROGRESS_MESSAGE],
        }
        outbox.put(self._event("progress", progress=progress, event_id=event_id, percent=value))

    # context manager protocol

    def __enter__(self) -> HubReporter:
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave_context()
        self._end(exc)

    async def __aenter__(self) -> HubReporter:
        self._begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave_context()
        if self._outbox is not None:
            await asyncio.to_thread(self._end, exc)

    # internals

    def _begin(self) -> None:
        if self._begun_at is not None:
            raise RuntimeError("a HubReporter reports one call; create a new one for the next")
        self._begun_at = time.monotonic()
        self._thread_id = threading.get_ident()
        options = self._options
        outer = _current.get()
        hub = _hub_config(options)
        call_id = _call_id(options.call_id) if hub is not None else None
        if outer is not None and outer.call_id is not None and outer.call_id == call_id:
            # A reported function called directly by another one, in the same call: the outer
            # reporter reports it, and report_progress() keeps going to the outer one.
            return
        self._token = _current.set(self)
        with _active_lock:
            _active.append(self)
        if hub is None or call_id is None:
            return
        try:
            self.call_id = call_id
            self._hub = hub
            self._metadata = _metadata(options)
            self._client = httpx.Client(verify=_tls_context())
            self._outbox = _Outbox(
                self._send_background, options.min_progress_interval, self._stop_background
            )
            self._outbox.put(self._event("started"))
            if options.timeout is not None:
                delay = options.timeout - options.soft_deadline_margin
                self._watchdog = threading.Timer(delay, self._soft_deadline)
                self._watchdog.name = "modalhub-soft-deadline"
                self._watchdog.daemon = True
                self._watchdog.start()
        except Exception:
            logger.warning(
                "modalhub: reporting disabled: could not start the reporter", exc_info=True
            )
            self._stop_background.set()
            self._outbox = None
            if self._client is not None:
                self._client.close()

    def _leave_context(self) -> None:
        if self._token is None:
            return
        try:
            _current.reset(self._token)
        except ValueError:  # left in another context than it was entered in
            _current.set(None)
        self._token = None
        with _active_lock:
            _active.remove(self)

    def _end(self, exc: BaseException | None) -> None:
        outbox, client = self._outbox, self._client
        if outbox is None or client is None:
            return
        options = self._options
        deadline = time.monotonic() + options.delivery_budget
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            # Pending started/progress first, so the hub sees a sensible order (it does not
            # depend on it); this takes at most half the budget, the rest is the final event's.
            outbox.close(min(options.progress_budget, options.delivery_budget / 2))
            event = self._final_event(exc)
            if event is not None:
                self._send(event, deadline - time.monotonic())
        except Exception:  # whatever goes wrong here, the function's outcome stands
            logger.warning(
                "modalhub: could not report the end of call %s", self.call_id, exc_info=True
            )
        finally:
            self._outbox = None
            client.close()

    def _final_event(self, exc: BaseException | None) -> _Event | None:
        elapsed = time.monotonic() - (self._begun_at or 0.0)
        if exc is None:
            return self._event("success", result=self._result, execution_time=elapsed)
        if _is_cancellation(exc):
            return self._event("cancelled", error=_error(exc), execution_time=elapsed)
        if isinstance(exc, Exception):
            return self._event("failure", error=_error(exc), execution_time=elapsed)
        # KeyboardInterrupt, SystemExit: the container is going away, and Modal may run the input
        # again; claiming a failure could be wrong. The hub's poller asks Modal instead.
        logger.warning(
            "modalhub: call %s interrupted by %s; no final event sent",
            self.call_id,
            type(exc).__name__,
        )
        return None

    def _event(
        self,
        kind: str,
        *,
        result: Any = None,
        error: dict[str, str] | None = None,
        progress: dict[str, Any] | None = None,
        execution_time: float | None = None,
        event_id: str | None = None,
        percent: float | None = None,
    ) -> _Event:
        assert self.call_id is not None
        event_type = f"function.{kind}"
        body = {
            "type": event_type,
            "call_id": self.call_id,
            "status": kind,
            "result": result,
            "error": error,
            "progress": progress,
            "execution_time": None if execution_time is None else round(execution_time, 3),
            "metadata": {**self._metadata, "timestamp": _utc_now()},
        }
        try:
            raw = json.dumps(body, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            body["result"] = _result_for_json(result)
            raw = json.dumps(body, separators=(",", ":"), allow_nan=False)
        # Started and final events have stable ids: resent after a container restart, the hub
        # answers "duplicate". Progress ids are unique per reporter and step.
        return _Event(
            id=event_id or f"{self.call_id}:{event_type}",
            type=event_type,
            call_id=self.call_id,
            body=raw.encode(),
            percent=percent,
        )

    def _send(self, event: _Event, budget: float, stop: threading.Event | None = None) -> bool:
        hub, client = self._hub, self._client
        if hub is None or client is None or budget <= 0:
            return False
        try:
            return _deliver(client, hub, event, budget, stop)
        except Exception:  # reporting must never break the function or kill a thread noisily
            logger.warning("modalhub: could not send %s", event.type, exc_info=True)
            return False

    def _send_background(self, event: _Event, stop: threading.Event) -> None:
        options = self._options
        budget = options.progress_budget if event.percent is not None else options.delivery_budget
        self._send(event, budget, stop)

    def _soft_deadline(self) -> None:
        """Watchdog: Modal will stop the function in ``soft_deadline_margin`` seconds."""
        options = self._options
        elapsed = time.monotonic() - (self._begun_at or 0.0)
        frame = sys._current_frames().get(self._thread_id)
        error = {
            "type": "SoftDeadlineExceeded",
            "message": (
                f"still running after {elapsed:.1f} s of a {options.timeout:g} s Modal timeout"
            ),
            "traceback": "".join(traceback.format_stack(frame))[-_MAX_TRACEBACK:] if frame else "",
        }
        try:
            event = self._event("timeout", error=error, execution_time=elapsed)
        except Exception:
            logger.warning("modalhub: could not build function.timeout", exc_info=True)
            return
        budget = min(options.delivery_budget, options.soft_deadline_margin)
        self._send(event, budget, self._stop_background)


def report_progress(percent: float, message: str | None = None) -> None:
    """Report progress (0-100) of the current reported call; never blocks, never raises.

    Outside a ``@report_to_hub`` function or a ``HubReporter`` block this does nothing (one
    warning per process). From a thread the function started, it reports to the call in progress
    when there is exactly one.
    """
    reporter = _current.get()
    if reporter is None:
        with _active_lock:
            reporter = _active[0] if len(_active) == 1 else None
    if reporter is None:
        _warn_once(
            "modalhub: report_progress() called outside a @report_to_hub function or a "
            "HubReporter block; ignored"
        )
        return
    reporter.progress(percent, message)


@overload
def report_to_hub(fn: F, /) -> F: ...


@overload
def report_to_hub(
    *,
    timeout: float | None = None,
    soft_deadline_margin: float = DEFAULT_SOFT_DEADLINE_MARGIN,
    metadata: Mapping[str, Any] | None = None,
    call_id: str | None = None,
    delivery_budget: float = DEFAULT_DELIVERY_BUDGET,
    progress_budget: float = DEFAULT_PROGRESS_BUDGET,
    min_progress_interval: float = DEFAULT_MIN_PROGRESS_INTERVAL,
) -> Callable[[F], F]: ...


def report_to_hub(
    fn: F | None = None,
    /,
    *,
    timeout: float | None = None,
    soft_deadline_margin: float = DEFAULT_SOFT_DEADLINE_MARGIN,
    metadata: Mapping[str, Any] | None = None,
    call_id: str | None = None,
    delivery_budget: float = DEFAULT_DELIVERY_BUDGET,
    progress_budget: float = DEFAULT_PROGRESS_BUDGET,
    min_progress_interval: float = DEFAULT_MIN_PROGRESS_INTERVAL,
) -> F | Callable[[F], F]:
    """Report each call of a sync or async function to the hub (see ``HubReporter``).

    Use bare (``@report_to_hub``) or with arguments (``@report_to_hub(timeout=3600)``), under
    ``@app.function``. Pass the same ``timeout`` as to ``@app.function`` to get
    ``function.timeout`` ``soft_deadline_margin`` seconds before Modal stops the function. The
    wrapper keeps the function's name, signature and sync/async nature; it returns what the
    function returns and re-raises what it raises.
    """
    options = _Options(
        call_id=call_id,
        timeout=timeout,
        soft_deadline_margin=soft_deadline_margin,
        metadata=metadata,
        delivery_budget=delivery_budget,
        progress_budget=progress_budget,
        min_progress_interval=min_progress_interval,
    )

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError("report_to_hub does not support generator functions; use HubReporter")
        named = dataclasses.replace(options, function=getattr(fn, "__name__", None))

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def reported_async(*args: Any, **kwargs: Any) -> Any:
                async with HubReporter._with_options(named) as reporter:
                    result = await fn(*args, **kwargs)
                    reporter.succeed(result)
                return result

            return cast(F, reported_async)

        @functools.wraps(fn)
        def reported(*args: Any, **kwargs: Any) -> Any:
            with HubReporter._with_options(named) as reporter:
                result = fn(*args, **kwargs)
                reporter.succeed(result)
            return result

        return cast(F, reported)

    return decorate if fn is None else decorate(fn)
