"""Build the configured backends."""

from __future__ import annotations

from modalhub.config import BlobKind, Settings, SqliteSynchronous, StoreKind
from modalhub.storage.local_blobs import LocalBlobStore
from modalhub.storage.protocols import BlobStore, JobStore
from modalhub.storage.sqlite import SqliteStore


def build_job_store(settings: Settings, *, applies_inbox: bool = True) -> JobStore:
    """``applies_inbox``: whether this process runs the processor. One that does not
    (the API beside a worker) leaves SQLite's WAL checkpoints to the one that does."""
    if settings.store is StoreKind.FIRESTORE:
        from modalhub.storage.firestore import FirestoreStore  # Google imports stay there

        return FirestoreStore.from_settings(settings)
    return SqliteStore(
        settings.sqlite_path,
        synchronous=settings.sqlite_synchronous.value,
        checkpoints=applies_inbox,
    )


def build_blob_store(settings: Settings) -> BlobStore:
    if settings.blobs is BlobKind.GCS:
        from modalhub.storage.gcs_blobs import GcsBlobStore  # Google imports stay there

        return GcsBlobStore.from_settings(settings)
    # Blobs are as durable as the store that will point at them.
    fsync = settings.sqlite_synchronous is SqliteSynchronous.FULL
    return LocalBlobStore(settings.blob_dir, fsync=fsync)
