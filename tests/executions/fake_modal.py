"""A small fake of the `modal` SDK surface that ModalExecutor uses.

Only what the adapter touches: Function.from_name(...).spawn.aio, FunctionCall.from_id
(...).get.aio / .cancel.aio, .object_id, and the exception classes. test_fake_modal.py
keeps it in line with the installed `modal` package.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class Error(Exception):
    pass


class NotFoundError(Error):
    pass


class ConnectionError(Error):  # the name modal uses
    pass


class AuthError(Error):
    pass


class TimeoutError(Error):  # modal's base of its timeouts
    pass


class FunctionTimeoutError(TimeoutError):
    pass


class OutputExpiredError(TimeoutError):
    pass


class InputCancellation(BaseException):
    pass


exception = SimpleNamespace(
    Error=Error,
    NotFoundError=NotFoundError,
    ConnectionError=ConnectionError,
    AuthError=AuthError,
    TimeoutError=TimeoutError,
    FunctionTimeoutError=FunctionTimeoutError,
    OutputExpiredError=OutputExpiredError,
    InputCancellation=InputCancellation,
)


class _Aio:
    """`method.aio(...)` as modal's synchronicity wrappers expose it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.aio = fn


@dataclass
class FakeCall:
    object_id: str
    outcome: Callable[[], Any] | None = None  # None: still running
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.get = _Aio(self._get)
        self.cancel = _Aio(self._cancel)

    async def _get(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - as modal
        if self.cancelled:
            raise InputCancellation()
        if self.outcome is None:
            raise builtins.TimeoutError()  # what modal raises while no output exists
        return self.outcome()

    async def _cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeCloud:
    """What is deployed, and the calls made so far."""

    functions: dict[tuple[str, str], Callable[..., Any]] = field(default_factory=dict)
    calls: dict[str, FakeCall] = field(default_factory=dict)
    spawned: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    unreachable: bool = False
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def module(self) -> SimpleNamespace:
        cloud = self

        class Function:
            def __init__(self, app: str, name: str) -> None:
                self.app, self.name = app, name
                self.spawn = _Aio(self._spawn)

            @classmethod
            def from_name(cls, app_name: str, name: str) -> Function:
                if cloud.unreachable:
                    raise ConnectionError("could not connect to Modal")
                if (app_name, name) not in cloud.functions:
                    raise NotFoundError(f"Function {app_name}/{name} not found")
                return cls(app_name, name)

            async def _spawn(self, *args: Any, **kwargs: Any) -> FakeCall:
                call = FakeCall(object_id=f"fc-fake{next(cloud._ids):06d}")
                cloud.calls[call.object_id] = call
                cloud.spawned.append((self.app, self.name, args, kwargs))
                return call

        class Cls:
            def __init__(self, app: str, name: str) -> None:
                self.app, self.name = app, name

            @classmethod
            def from_name(cls, app_name: str, name: str) -> Cls:
                if not any(
                    k[0] == app_name and k[1].startswith(f"{name}.") for k in cloud.functions
                ):
                    raise NotFoundError(f"Class {app_name}/{name} not found")
                return cls(app_name, name)

            def __call__(self) -> Any:
                methods = {
                    key[1].split(".", 1)[1]: Function(self.app, key[1])
                    for key in cloud.functions
                    if key[0] == self.app and key[1].startswith(f"{self.name}.")
                }
                return SimpleNamespace(**methods)

        class FunctionCall:
            @staticmethod
            def from_id(call_id: str) -> FakeCall:
                if cloud.unreachable:
                    raise ConnectionError("could not connect to Modal")
                if call_id not in cloud.calls:
                    raise NotFoundError(f"no call {call_id}")
                return cloud.calls[call_id]

        return SimpleNamespace(
            Function=Function, Cls=Cls, FunctionCall=FunctionCall, exception=exception
        )
