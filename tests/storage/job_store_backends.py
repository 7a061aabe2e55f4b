"""The job store implementations the contract suite runs against."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modalhub.storage.protocols import JobStore
from modalhub.storage.sqlite import SqliteStore
from tests.emulators import PROJECT


def firestore_store(**kwargs: float) -> JobStore:
    from modalhub.storage.firestore import FirestoreStore

    # A prefix per test: a call a previous test abandoned cannot write into this one.
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    return FirestoreStore(project=PROJECT, prefix=prefix, **kwargs)


@pytest.fixture(params=["sqlite", "firestore"])
async def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    store: JobStore
    if request.param == "firestore":
        request.getfixturevalue("firestore_emulator")
        # The emulator serialises contended transactions slowly (seconds each): give
        # them room, so the suite tests the semantics, not the emulator's speed.
        store = firestore_store(timeout_seconds=10, transaction_timeout_seconds=60)
    else:
        store = SqliteStore(tmp_path / "store.sqlite3", synchronous="NORMAL")
    await store.open()
    try:
        yield store
    finally:
        await store.close()
