"""Every storage implementation runs the same contract suites."""

from tests.storage.blob_store_backends import blob_store
from tests.storage.job_store_backends import job_store

__all__ = ["blob_store", "job_store"]
