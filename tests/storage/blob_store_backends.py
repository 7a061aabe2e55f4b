"""The blob store implementations the contract suite runs against."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from modalhub.storage.gcs_blobs import GcsBlobStore
from modalhub.storage.local_blobs import LocalBlobStore
from modalhub.storage.protocols import BlobStore
from tests.emulators import PROJECT


def unique_bucket_name() -> str:
    return f"modalhub-test-{uuid.uuid4().hex[:20]}"


def create_bucket_sync(name: str) -> None:
    """Create a bucket in the fake-gcs-server that STORAGE_EMULATOR_HOST points at."""
    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    try:
        client.create_bucket(name, timeout=10)
    finally:
        client.close()


async def create_bucket(name: str) -> None:
    await asyncio.to_thread(create_bucket_sync, name)


@pytest.fixture(params=["local-fsync", "local", "gcs"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store: LocalBlobStore | GcsBlobStore
    if request.param == "gcs":
        request.getfixturevalue("gcs_emulator")  # started once, only when a gcs test runs
        bucket = unique_bucket_name()
        await create_bucket(bucket)
        store = GcsBlobStore(bucket, project=PROJECT, timeout_seconds=5.0)
    else:
        store = LocalBlobStore(tmp_path / "blobs", fsync=request.param == "local-fsync")
    await store.open()
    yield store
    await store.close()
