"""The executor interface: spawn a function, ask how a call is doing, cancel it."""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class ExecutionState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # the executor no longer knows the call's outcome


@dataclass(frozen=True, slots=True)
class ExecutionStatus:
    state: ExecutionState
    result: Any = None
    error: dict[str, Any] | None = None


def error_info(error: BaseException) -> dict[str, Any]:
    """A call's exception as the job records it (the shape of a callback's ``error``)."""
    return {
        "type": type(error).__name__,
        "message": str(error)[:2000],
        "traceback": "".join(traceback.format_exception(error))[-8000:],
    }


class UnknownFunctionError(LookupError):
    """No such app/function on the executor: the submitter's mistake (a 4xx)."""


class ExecutorUnavailableError(Exception):
    """The executor could not be reached; the caller may retry (a 503)."""


class Executor(Protocol):
    # True when any process can ask about any call (Modal): one poller for all replicas
    # is enough. False when only the process that spawned a call knows it (local).
    shared_calls: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def spawn(
        self, app: str, function: str, *, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        """Start the function and return its call id without waiting for it."""

    async def status(self, call_id: str) -> ExecutionStatus:
        """How the call is doing, without blocking (RUNNING while it runs)."""

    async def cancel(self, call_id: str) -> None:
        """Stop the call; cancelling a finished or unknown call is not an error."""
