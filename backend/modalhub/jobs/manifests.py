"""The manifest of a completed batch: every job's outcome, in the blob store."""

from __future__ import annotations

import json
from typing import Any

import structlog

from modalhub.storage.protocols import BlobStore, JobFilter, JobStore

log = structlog.get_logger(__name__)


async def write_manifest(store: JobStore, blobs: BlobStore, batch_id: str) -> str | None:
    """Write the manifest of a completed batch (create-only: a re-run finds it), and
    record its URI. Returns the URI, or None while the batch is not complete."""
    batch = await store.get_batch(batch_id)
    if batch is None or batch.completed_at is None:
        return None
    if batch.manifest_uri:
        return batch.manifest_uri
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await store.list_jobs(JobFilter(batch_id=batch_id), limit=500, cursor=cursor)
        jobs += [
            {
                "job_id": job.job_id,
                "call_id": job.call_id,
                "app": job.app,
                "function": job.function,
                "status": job.status.value,
                "result": job.result,
                "result_uris": job.result_uris,
                "error": job.error,
                "execution_time": job.execution_time,
            }
            for job in page.jobs
        ]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    manifest = {
        "batch_id": batch_id,
        "total": batch.total,
        "counts": batch.counts,
        "created_at": batch.created_at,
        "completed_at": batch.completed_at,
        "metadata": batch.metadata,
        "jobs": jobs,
    }
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    ref = await blobs.put_if_absent(
        f"results/batches/{batch_id}/manifest.json", body, content_type="application/json"
    )
    await store.set_batch_manifest(batch_id, ref.uri)
    log.info("batch completed", batch_id=batch_id, counts=batch.counts, manifest=ref.uri)
    return ref.uri
