"""The job store implementations the contract suite runs against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modalhub.storage.protocols import JobStore
from modalhub.storage.sqlite import SqliteStore


@pytest.fixture(params=["sqlite"])
async def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    store = SqliteStore(tmp_path / "store.sqlite3", synchronous="NORMAL")
    await store.open()
    try:
        yield store
    finally:
        await store.close()
