"""Batches: many jobs submitted together, complete when their last job is, with a
manifest of every job's outcome written to the blob store once they are."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from ulid import ULID

from modalhub.executions.protocols import ExecutorUnavailableError, UnknownFunctionError
from modalhub.hub import Hub
from modalhub.jobs.manifests import write_manifest
from modalhub.jobs.service import pending_job, submit_job
from modalhub.storage.models import Batch, Job, JobStatus, Notification

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JobSpec:
    app: str
    function: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    notify_url: str | None = None


async def submit_batch(
    hub: Hub,
    specs: Sequence[JobSpec],
    *,
    batch_id: str | None,
    metadata: Mapping[str, Any],
    notify_url: str | None = None,
) -> tuple[Batch, list[Job]]:
    batch = Batch(
        batch_id=batch_id or f"batch-{ULID()}",
        total=len(specs),
        created_at=time.time(),
        metadata=dict(metadata),
        notification=Notification(notify_url) if notify_url else None,
    )
    await hub.store.create_batch(batch)  # first: every job is counted as it is registered
    jobs = []
    for spec in specs:
        try:
            job = await submit_job(
                hub,
                app=spec.app,
                function=spec.function,
                args=spec.args,
                kwargs=spec.kwargs,
                metadata=spec.metadata,
                batch_id=batch.batch_id,
                notify_url=spec.notify_url,
            )
        except (UnknownFunctionError, ExecutorUnavailableError) as exc:
            # The batch counts on this job: record it as failed so the batch still ends.
            job = await _record_unspawned(hub, spec, batch.batch_id, exc)
        jobs.append(job)
    log.info("batch submitted", batch_id=batch.batch_id, total=batch.total)
    await write_manifest(hub.store, hub.blobs, batch.batch_id)  # if every spawn failed
    return await hub.store.get_batch(batch.batch_id) or batch, jobs


async def _record_unspawned(hub: Hub, spec: JobSpec, batch_id: str, exc: Exception) -> Job:
    job = pending_job(
        call_id=f"unspawned-{ULID()}",
        app=spec.app,
        function=spec.function,
        batch_id=batch_id,
        metadata=spec.metadata,
        notify_url=spec.notify_url,
    )
    job.status = JobStatus.FAILED
    job.finished_at = time.time()
    job.completed_by = "hub"
    job.error = {"type": type(exc).__name__, "message": f"could not spawn: {exc}"}
    job.schedule_notification(now=job.finished_at)
    return await hub.store.register_job(job)
