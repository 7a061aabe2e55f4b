"""The BlobStore contract: create-only writes, readable back."""

from __future__ import annotations

import asyncio

import pytest

from modalhub.storage.protocols import BlobStore


async def test_put_is_create_only(blob_store: BlobStore) -> None:
    first = await blob_store.put_if_absent("results/j/a.bin", b"one", content_type="x/y")
    second = await blob_store.put_if_absent("results/j/a.bin", b"two", content_type="x/y")
    assert (first.created, second.created) == (True, False)
    assert first.uri == second.uri
    assert await blob_store.get("results/j/a.bin") == b"one"


async def test_concurrent_puts_create_once(blob_store: BlobStore) -> None:
    refs = await asyncio.gather(
        *(blob_store.put_if_absent("k/c", bytes([i]) * 1000, content_type="x/y") for i in range(10))
    )
    assert sum(ref.created for ref in refs) == 1
    data = await blob_store.get("k/c")
    assert data is not None and len(data) == 1000 and len(set(data)) == 1


async def test_missing_blob_is_none(blob_store: BlobStore) -> None:
    assert await blob_store.get("nothing/here") is None


@pytest.mark.parametrize("key", ["../escape", "/abs/path", ""])
async def test_keys_cannot_escape(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await blob_store.put_if_absent(key, b"x", content_type="x/y")


async def test_ping(blob_store: BlobStore) -> None:
    await blob_store.ping()
