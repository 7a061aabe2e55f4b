"""The local executor: runs the functions of Modal app files in worker processes.

It loads the very files you would `modal deploy` (MODALHUB_LOCAL_APPS) and addresses a
function by its Modal app name and function name, as Modal does ("Class.method" for a
method of a `modal.Cls`). `modal` is imported,
never contacted: each call runs `Function.local(...)` in a fresh process, with the
environment a `modal.Secret` would give it on Modal plus MODALHUB_CALL_ID, so the
worker SDK sends real signed callbacks to the hub over HTTP. Timeouts are the ones the
app declares (`@app.function(timeout=...)`, Modal's default otherwise) and end the
process; cancel ends it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import structlog
from ulid import ULID

from modalhub.executions.protocols import (
    ExecutionState,
    ExecutionStatus,
    UnknownFunctionError,
    error_info,
)

log = structlog.get_logger(__name__)

MODAL_DEFAULT_TIMEOUT = 300.0  # what `@app.function()` gets without timeout=


@dataclass(frozen=True, slots=True)
class LocalFunction:
    app: str
    name: str
    path: Path
    timeout: float


@dataclass
class _Call:
    function: LocalFunction
    process: BaseProcess
    outcome_pipe: Connection
    outcome: ExecutionStatus | None = None
    watchdog: asyncio.TimerHandle | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _Declared:
    app: str
    name: str
    timeout: float
    function: Any  # the modal.Function the decorator returned


@dataclass(frozen=True, slots=True)
class _Method:
    """A method of a `modal.Cls`, run as Modal runs it locally: a fresh instance (its
    `@modal.enter()` hooks run first), then the method's own `.local(...)`."""

    cls: Any  # the modal.Cls the decorator returned
    name: str

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.cls(), self.name).local(*args, **kwargs)


def _is_method(modal: Any, instance: Any, name: str) -> bool:
    """A `@modal.method()` reads as a modal.Function on an instance; a lifecycle hook
    (`@modal.enter()` ...) is not one, and modal raises when it is read."""
    try:
        return isinstance(getattr(instance, name), modal.Function)
    except Exception:
        return False


@contextlib.contextmanager
def _recording_functions(found: list[_Declared]) -> Iterator[None]:
    """Record every `@app.function(...)` and `@app.cls(...)` applied while the block runs,
    from the public decorators' own arguments rather than modal's private state. A method
    of a class is named "Class.method", as the Modal executor addresses it."""
    import modal
    from modal.partial_function import PartialFunction

    original_function, original_cls = modal.App.function, modal.App.cls

    def function(self: Any, *args: Any, **kwargs: Any) -> Any:
        wrap = original_function(self, *args, **kwargs)
        timeout = float(kwargs.get("timeout") or MODAL_DEFAULT_TIMEOUT)

        def register(fn: Any) -> Any:
            declared = wrap(fn)
            name = getattr(fn, "__name__", str(fn))
            found.append(_Declared(self.name, name, timeout, declared))
            return declared

        return register

    def cls(self: Any, *args: Any, **kwargs: Any) -> Any:
        wrap = original_cls(self, *args, **kwargs)
        timeout = float(kwargs.get("timeout") or MODAL_DEFAULT_TIMEOUT)

        def register(user_cls: type) -> Any:
            declared = wrap(user_cls)
            instance = declared()  # local and lazy: nothing runs until a method is called
            for name, value in vars(user_cls).items():
                if isinstance(value, PartialFunction) and _is_method(modal, instance, name):
                    method = _Method(declared, name)
                    qualified = f"{user_cls.__name__}.{name}"
                    found.append(_Declared(self.name, qualified, timeout, method))
            return declared

        return register

    modal.App.function = function  # type: ignore[method-assign]
    modal.App.cls = cls  # type: ignore[method-assign]
    try:
        yield
    finally:
        modal.App.function = original_function  # type: ignore[method-assign]
        modal.App.cls = original_cls  # type: ignore[method-assign]


def _import_app_file(path: Path, module_name: str) -> list[_Declared]:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    found: list[_Declared] = []
    with _recording_functions(found):
        spec.loader.exec_module(module)
    return found


def load_functions(paths: Sequence[Path]) -> dict[tuple[str, str], LocalFunction]:
    registry: dict[tuple[str, str], LocalFunction] = {}
    for index, path in enumerate(paths):
        if not path.is_file():
            raise ValueError(f"MODALHUB_LOCAL_APPS: {path} does not exist")
        for declared in _import_app_file(path, f"modalhub_local_app_{index}"):
            key = (declared.app, declared.name)
            registry[key] = LocalFunction(
                declared.app, declared.name, path.resolve(), declared.timeout
            )
    return registry


def _run_call(
    path: str,
    app: str,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    env: dict[str, str],
    outcome: Connection,
) -> None:
    """The worker process: the function runs as it would in a Modal container."""
    os.environ.update(env)
    try:
        declared = {(d.app, d.name): d for d in _import_app_file(Path(path), "modalhub_call")}
        result = declared[(app, name)].function.local(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        outcome.send(("ok", result))
    except BaseException as error:
        outcome.send(("error", error_info(error)))
    finally:
        outcome.close()


class LocalExecutor:
    shared_calls = False  # a call's process is a child of the hub process that spawned it

    def __init__(self, app_files: Sequence[Path], *, hub_url: str, secrets: Sequence[str]) -> None:
        self.app_files = list(app_files)
        self.hub_url = hub_url
        self.secrets = " ".join(secrets)
        self.functions: dict[tuple[str, str], LocalFunction] = {}
        self._calls: dict[str, _Call] = {}
        self._context = multiprocessing.get_context("spawn")

    async def open(self) -> None:
        self.functions = await asyncio.to_thread(load_functions, self.app_files)
        log.info("local executor ready", functions=sorted(f"{a}/{n}" for a, n in self.functions))

    async def close(self) -> None:
        for call_id in list(self._calls):
            await self.cancel(call_id)

    async def spawn(
        self, app: str, function: str, *, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        target = self.functions.get((app, function))
        if target is None:
            known = ", ".join(sorted(f"{a}/{n}" for a, n in self.functions)) or "none"
            raise UnknownFunctionError(
                f"no function {function!r} in app {app!r} (local apps offer: {known})"
            )
        call_id = f"lc-{ULID()}"
        env = {
            "WEBHOOK_BASE_URL": self.hub_url,
            "MODAL_WEBHOOK_SECRET": self.secrets,
            "MODALHUB_CALL_ID": call_id,
            "MODALHUB_APP": app,
            "MODALHUB_FUNCTION": function,
        }
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_run_call,
            args=(str(target.path), app, function, list(args), dict(kwargs), env, sender),
            name=f"modalhub-{call_id}",
            daemon=True,
        )
        await asyncio.to_thread(process.start)
        sender.close()
        call = _Call(target, process, receiver)
        call.watchdog = asyncio.get_running_loop().call_later(
            target.timeout, self._time_out, call_id
        )
        self._calls[call_id] = call
        return call_id

    async def status(self, call_id: str) -> ExecutionStatus:
        call = self._calls.get(call_id)
        if call is None:
            return ExecutionStatus(ExecutionState.EXPIRED)  # not started by this process
        # Read as soon as the child wrote: a large result would otherwise fill the pipe and
        # keep the child from exiting.
        if call.outcome is None and (call.outcome_pipe.poll() or not call.process.is_alive()):
            call.outcome = self._read_outcome(call)
            if call.watchdog is not None:
                call.watchdog.cancel()
        return call.outcome or ExecutionStatus(ExecutionState.RUNNING)

    async def cancel(self, call_id: str) -> None:
        self._stop(call_id, ExecutionStatus(ExecutionState.CANCELLED))

    def _time_out(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        timeout = call.function.timeout if call else 0
        error = {"type": "FunctionTimeoutError", "message": f"exceeded its {timeout:g} s timeout"}
        self._stop(call_id, ExecutionStatus(ExecutionState.TIMED_OUT, error=error))

    def _stop(self, call_id: str, outcome: ExecutionStatus) -> None:
        call = self._calls.get(call_id)
        if call is None or call.outcome is not None:
            return
        if call.process.is_alive():
            call.process.terminate()
            call.outcome = outcome
        else:
            call.outcome = self._read_outcome(call)
        if call.watchdog is not None:
            call.watchdog.cancel()

    @staticmethod
    def _read_outcome(call: _Call) -> ExecutionStatus:
        with contextlib.suppress(EOFError, OSError):
            if call.outcome_pipe.poll():
                kind, value = call.outcome_pipe.recv()
                if kind == "ok":
                    return ExecutionStatus(ExecutionState.SUCCEEDED, result=value)
                return ExecutionStatus(ExecutionState.FAILED, error=value)
        code = call.process.exitcode
        return ExecutionStatus(
            ExecutionState.FAILED,
            error={"type": "ProcessExited", "message": f"worker process exited with {code}"},
        )
