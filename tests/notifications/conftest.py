from tests.storage.job_store_backends import job_store

__all__ = ["job_store"]
