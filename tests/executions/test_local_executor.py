"""The local executor runs the functions of a Modal app file in worker processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modalhub.executions.local import LocalExecutor
from modalhub.executions.protocols import ExecutionState, ExecutionStatus, UnknownFunctionError

APP = """
import threading
import modal

app = modal.App("toolbox")

@app.function()
def add(a: int, b: int) -> int:
    return a + b

@app.function()
def explode(message: str) -> None:
    raise RuntimeError(message)

@app.function(timeout=2)
def wait_forever() -> None:
    threading.Event().wait()

@app.function()
async def shout(text: str) -> str:
    return text.upper()

@app.cls(timeout=2)
class Scaler:
    factor: int = modal.parameter(default=3)

    @modal.enter()
    def load(self) -> None:
        self.offset = 100  # what a model load would set up, once per container

    @modal.method()
    def scale(self, x: int) -> int:
        return self.offset + self.factor * x

    @modal.method()
    def stall(self) -> None:
        threading.Event().wait()

    def helper(self) -> int:  # not a Modal method: not addressable
        return 0
"""


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[LocalExecutor]:
    path = tmp_path / "toolbox.py"
    path.write_text(APP)
    executor = LocalExecutor([path], hub_url="http://127.0.0.1:9", secrets=["s" * 32])
    await executor.open()
    yield executor
    await executor.close()


async def settle(executor: LocalExecutor, call_id: str, within: float = 60) -> ExecutionStatus:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = await executor.status(call_id)
        if status.state is not ExecutionState.RUNNING:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{call_id} still running after {within} s")


async def test_functions_are_addressed_by_app_and_name(executor: LocalExecutor) -> None:
    assert set(executor.functions) == {
        ("toolbox", "add"),
        ("toolbox", "explode"),
        ("toolbox", "wait_forever"),
        ("toolbox", "shout"),
        ("toolbox", "Scaler.scale"),
        ("toolbox", "Scaler.stall"),
    }
    assert executor.functions[("toolbox", "wait_forever")].timeout == 2
    assert executor.functions[("toolbox", "add")].timeout == 300  # Modal's default
    with pytest.raises(UnknownFunctionError, match="toolbox/add"):
        await executor.spawn("toolbox", "subtract", args=[], kwargs={})


async def test_results_errors_timeouts_and_cancel(executor: LocalExecutor) -> None:
    added = await executor.spawn("toolbox", "add", args=[2], kwargs={"b": 40})
    failed = await executor.spawn("toolbox", "explode", args=["no GPU"], kwargs={})
    shouted = await executor.spawn("toolbox", "shout", args=["hi"], kwargs={})
    timed = await executor.spawn("toolbox", "wait_forever", args=[], kwargs={})
    cancelled = await executor.spawn("toolbox", "wait_forever", args=[], kwargs={})
    await executor.cancel(cancelled)
    assert (await executor.status(cancelled)).state is ExecutionState.CANCELLED
    assert added.startswith("lc-") and len({added, failed, shouted, timed, cancelled}) == 5

    assert await settle(executor, added) == ExecutionStatus(ExecutionState.SUCCEEDED, result=42)
    assert (await settle(executor, shouted)).result == "HI"
    error = (await settle(executor, failed)).error
    assert error is not None and (error["type"], error["message"]) == ("RuntimeError", "no GPU")

    assert (await settle(executor, timed, within=30)).state is ExecutionState.TIMED_OUT
    assert (await executor.status("lc-unknown")).state is ExecutionState.EXPIRED


async def test_methods_of_a_modal_cls_run_as_on_modal(executor: LocalExecutor) -> None:
    assert executor.functions[("toolbox", "Scaler.scale")].timeout == 2  # from @app.cls
    call_id = await executor.spawn("toolbox", "Scaler.scale", args=[5], kwargs={})
    status = await settle(executor, call_id)
    assert (status.state, status.result) == (ExecutionState.SUCCEEDED, 115)  # enter hook ran
    stalled = await executor.spawn("toolbox", "Scaler.stall", args=[], kwargs={})
    assert (await settle(executor, stalled)).state is ExecutionState.TIMED_OUT
    with pytest.raises(UnknownFunctionError, match=r"Scaler\.load"):  # a hook, not a method
        await executor.spawn("toolbox", "Scaler.load", args=[], kwargs={})
    with pytest.raises(UnknownFunctionError, match=r"Scaler\.helper"):
        await executor.spawn("toolbox", "Scaler.helper", args=[], kwargs={})
