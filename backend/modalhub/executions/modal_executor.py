"""The Modal executor: a thin adapter over the `modal` SDK (imported only here).

Credentials come from MODAL_TOKEN_ID / MODAL_TOKEN_SECRET, as for the modal CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from modalhub.executions.protocols import (
    ExecutionState,
    ExecutionStatus,
    ExecutorUnavailableError,
    UnknownFunctionError,
    error_info,
)


class ModalExecutor:
    shared_calls = True  # FunctionCall.from_id works from anywhere

    def __init__(self, modal: ModuleType | None = None) -> None:
        # Tests pass a fake module with the same surface; tests/executions checks that
        # the fake's names and exception classes match the installed `modal` package.
        if modal is None:
            import modal as modal_module

            modal = modal_module
        self.modal = modal

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def spawn(
        self, app: str, function: str, *, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        exc = self.modal.exception
        try:
            if "." in function:  # "Class.method": a method of a modal.Cls
                class_name, method = function.split(".", 1)
                instance = self.modal.Cls.from_name(app, class_name)()
                fn = getattr(instance, method)
            else:
                fn = self.modal.Function.from_name(app, function)
            call = await fn.spawn.aio(*args, **kwargs)
        except (exc.NotFoundError, AttributeError) as error:
            raise UnknownFunctionError(f"no function {function!r} in Modal app {app!r}") from error
        except (exc.ConnectionError, exc.AuthError, OSError) as error:
            raise ExecutorUnavailableError(f"Modal: {error}") from error
        call_id: str = call.object_id
        return call_id

    async def status(self, call_id: str) -> ExecutionStatus:
        exc = self.modal.exception
        try:
            call = self.modal.FunctionCall.from_id(call_id)
            result = await call.get.aio(timeout=0)
        except exc.FunctionTimeoutError as error:
            return ExecutionStatus(ExecutionState.TIMED_OUT, error=error_info(error))
        except exc.OutputExpiredError:
            return ExecutionStatus(ExecutionState.EXPIRED)
        except TimeoutError:  # the built-in one: no output yet, the call is running
            return ExecutionStatus(ExecutionState.RUNNING)
        except exc.InputCancellation:
            return ExecutionStatus(ExecutionState.CANCELLED)
        except (exc.ConnectionError, exc.AuthError) as error:
            raise ExecutorUnavailableError(f"Modal: {error}") from error
        except Exception as error:  # the function's own exception, re-raised by Modal
            return ExecutionStatus(ExecutionState.FAILED, error=error_info(error))
        return ExecutionStatus(ExecutionState.SUCCEEDED, result=result)

    async def cancel(self, call_id: str) -> None:
        exc = self.modal.exception
        try:
            await self.modal.FunctionCall.from_id(call_id).cancel.aio()
        except exc.NotFoundError:
            return
        except (exc.ConnectionError, exc.AuthError) as error:
            raise ExecutorUnavailableError(f"Modal: {error}") from error
