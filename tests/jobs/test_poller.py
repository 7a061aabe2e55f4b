"""The poller: with an executor whose calls any process can ask about, only the process
holding the poller lease polls, and another takes over when it stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from modalhub.config import Settings
from modalhub.executions.protocols import ExecutionState, ExecutionStatus
from modalhub.hub import Hub
from modalhub.jobs.poller import run_poller
from modalhub.jobs.service import pending_job
from modalhub.storage.local_blobs import LocalBlobStore
from modalhub.storage.sqlite import SqliteStore


class CountingExecutor:
    """Answers "running" for every call and counts how often it was asked."""

    def __init__(self, *, shared_calls: bool) -> None:
        self.shared_calls = shared_calls
        self.asked = 0

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def spawn(
        self, app: str, function: str, *, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str:
        raise NotImplementedError

    async def status(self, call_id: str) -> ExecutionStatus:
        self.asked += 1
        return ExecutionStatus(ExecutionState.RUNNING)

    async def cancel(self, call_id: str) -> None: ...


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[list[SqliteStore]]:
    # Two processes' stores over one file, as two replicas share one database.
    opened = [SqliteStore(tmp_path / "hub.sqlite3", synchronous="NORMAL") for _ in range(2)]
    for store in opened:
        await store.open()
    await opened[0].register_job(pending_job(call_id="fc-poll", app="a", function="f"))
    yield opened
    for store in opened:
        await store.close()


def replicas(tmp_path: Path, stores: list[SqliteStore], *, shared: bool) -> list[Hub]:
    settings = Settings(data_dir=tmp_path, poll_interval_seconds=0.02)
    blobs = LocalBlobStore(tmp_path / "blobs")
    return [
        Hub(settings, store, blobs, None, None, CountingExecutor(shared_calls=shared))
        for store in stores
    ]


def asked(hub: Hub) -> int:
    executor = hub.executor
    assert isinstance(executor, CountingExecutor)
    return executor.asked


async def until(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_one_replica_polls_and_another_takes_over(
    tmp_path: Path, stores: list[SqliteStore]
) -> None:
    first, second = replicas(tmp_path, stores, shared=True)
    leader = asyncio.create_task(run_poller(first))
    await until(lambda: asked(first) >= 1)  # the first takes the lease
    follower = asyncio.create_task(run_poller(second))
    await until(lambda: asked(first) >= 10)  # many rounds later ...
    assert asked(second) == 0  # ... the second has not asked once
    leader.cancel()  # the leader stops and gives the lease up
    await asyncio.gather(leader, return_exceptions=True)
    await until(lambda: asked(second) >= 3)  # at once, not after the lease's 30 s
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)


async def test_without_shared_calls_every_replica_polls(
    tmp_path: Path, stores: list[SqliteStore]
) -> None:
    hubs = replicas(tmp_path, stores, shared=False)  # each knows only the calls it spawned
    tasks = [asyncio.create_task(run_poller(hub)) for hub in hubs]
    try:
        await until(lambda: all(asked(hub) >= 3 for hub in hubs))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
