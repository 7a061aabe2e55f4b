"""ModalExecutor against the fake SDK, and the fake against the real `modal` package."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import cast

import modal
import modal.exception
import pytest

from modalhub.executions.modal_executor import ModalExecutor
from modalhub.executions.protocols import (
    ExecutionState,
    ExecutorUnavailableError,
    UnknownFunctionError,
)
from tests.executions import fake_modal
from tests.executions.fake_modal import FakeCloud


@pytest.fixture
def cloud() -> FakeCloud:
    cloud = FakeCloud()
    cloud.functions[("boltz2", "predict")] = lambda: None
    cloud.functions[("boltz2", "Model.embed")] = lambda: None  # a method of a modal.Cls
    return cloud


@pytest.fixture
def executor(cloud: FakeCloud) -> ModalExecutor:
    return ModalExecutor(modal=cast(ModuleType, cloud.module()))


async def test_spawn_returns_the_call_id(cloud: FakeCloud, executor: ModalExecutor) -> None:
    call_id = await executor.spawn("boltz2", "predict", args=["MKT"], kwargs={"steps": 3})
    assert call_id in cloud.calls
    assert cloud.spawned == [("boltz2", "predict", ("MKT",), {"steps": 3})]


async def test_class_methods_are_addressed_as_class_dot_method(
    cloud: FakeCloud, executor: ModalExecutor
) -> None:
    call_id = await executor.spawn("boltz2", "Model.embed", args=["MKT"], kwargs={})
    assert call_id in cloud.calls and cloud.spawned[-1][:2] == ("boltz2", "Model.embed")
    with pytest.raises(UnknownFunctionError):
        await executor.spawn("boltz2", "Model.missing", args=[], kwargs={})
    with pytest.raises(UnknownFunctionError):
        await executor.spawn("boltz2", "Nope.embed", args=[], kwargs={})


async def test_unknown_function_and_unreachable_modal(
    cloud: FakeCloud, executor: ModalExecutor
) -> None:
    with pytest.raises(UnknownFunctionError, match="nope"):
        await executor.spawn("boltz2", "nope", args=[], kwargs={})
    cloud.unreachable = True
    with pytest.raises(ExecutorUnavailableError):
        await executor.spawn("boltz2", "predict", args=[], kwargs={})


async def test_status_maps_every_outcome(cloud: FakeCloud, executor: ModalExecutor) -> None:
    call_id = await executor.spawn("boltz2", "predict", args=[], kwargs={})
    call = cloud.calls[call_id]
    assert (await executor.status(call_id)).state is ExecutionState.RUNNING

    call.outcome = lambda: {"affinity": 0.5}
    done = await executor.status(call_id)
    assert (done.state, done.result) == (ExecutionState.SUCCEEDED, {"affinity": 0.5})

    def boom() -> None:
        raise ValueError("bad sequence")

    call.outcome = boom
    failed = await executor.status(call_id)
    assert failed.state is ExecutionState.FAILED and failed.error is not None
    assert (failed.error["type"], failed.error["message"]) == ("ValueError", "bad sequence")

    def timed_out() -> None:
        raise fake_modal.FunctionTimeoutError("took too long")

    call.outcome = timed_out
    assert (await executor.status(call_id)).state is ExecutionState.TIMED_OUT

    def expired() -> None:
        raise fake_modal.OutputExpiredError()

    call.outcome = expired
    assert (await executor.status(call_id)).state is ExecutionState.EXPIRED

    await executor.cancel(call_id)
    assert (await executor.status(call_id)).state is ExecutionState.CANCELLED
    await executor.cancel("fc-unknown")  # not an error


def test_fake_matches_the_real_modal_package() -> None:
    # Every exception the fake raises exists in modal with the same ancestry by name.
    for name, fake_class in vars(fake_modal.exception).items():
        real_class = getattr(modal.exception, name)
        fake_bases = [c.__name__ for c in fake_class.__mro__ if c.__module__ == fake_modal.__name__]
        real_bases = [
            c.__name__
            for c in real_class.__mro__
            if c.__module__ == "modal.exception" and not c.__name__.startswith("_")
        ]
        assert fake_bases == real_bases, name
        assert issubclass(real_class, Exception) == issubclass(fake_class, Exception), name
    # Modal raises the built-in TimeoutError while a call has no output yet: modal's own
    # TimeoutError must stay a different class, or the adapter's mapping would be wrong.
    assert modal.exception.TimeoutError is not TimeoutError
    assert not issubclass(modal.exception.FunctionTimeoutError, TimeoutError)
    # The methods the adapter calls exist, with the parameters it passes.
    assert callable(modal.Function.from_name)
    assert callable(modal.Cls.from_name)
    assert callable(modal.FunctionCall.from_id)
    assert hasattr(modal.Function, "spawn") and hasattr(modal.FunctionCall, "cancel")
    get = inspect.signature(modal.FunctionCall.get)
    assert "timeout" in get.parameters
    assert "object_id" in dir(modal.FunctionCall)
