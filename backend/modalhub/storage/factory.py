"""Build the configured backends."""

from __future__ import annotations

from modalhub.config import Settings
from modalhub.storage.local_blobs import LocalBlobStore
from modalhub.storage.protocols import BlobStore, JobStore
from modalhub.storage.sqlite import SqliteStore


def build_job_store(settings: Settings) -> JobStore:
    return SqliteStore(settings.sqlite_path, synchronous=settings.sqlite_synchronous.value)


def build_blob_store(settings: Settings) -> BlobStore:
    return LocalBlobStore(settings.blob_dir)
