"""The blob store implementations the contract suite runs against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modalhub.storage.local_blobs import LocalBlobStore
from modalhub.storage.protocols import BlobStore


@pytest.fixture(params=["local-fsync", "local"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = LocalBlobStore(tmp_path / "blobs", fsync=request.param == "local-fsync")
    await store.open()
    yield store
    await store.close()
