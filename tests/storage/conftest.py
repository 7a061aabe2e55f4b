"""Every storage implementation runs the same contract suites (Firestore and GCS join later)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modalhub.storage.local_blobs import LocalBlobStore
from modalhub.storage.protocols import BlobStore, JobStore
from modalhub.storage.sqlite import SqliteStore


@pytest.fixture(params=["sqlite"])
async def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    store = SqliteStore(tmp_path / "store.sqlite3", synchronous="NORMAL")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["local-fsync", "local"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = LocalBlobStore(tmp_path / "blobs", fsync=request.param == "local-fsync")
    await store.open()
    yield store
    await store.close()
