"""The job state machine: pure, idempotent and order-proof.

pending -> running -> succeeded | failed | timed_out | cancelled. A terminal state is
final; progress only moves forward; duplicate, late or out-of-order events are no-ops
(they are still counted in ``events_seen`` so every processed entry is accounted for).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from modalhub.ingest.schemas import CallbackEvent, EventType
from modalhub.storage.models import Job, JobStatus
from modalhub.storage.protocols import Decision, derived_job_id

TERMINAL_FOR_EVENT = {
    EventType.SUCCESS: JobStatus.SUCCEEDED,
    EventType.FAILURE: JobStatus.FAILED,
    EventType.TIMEOUT: JobStatus.TIMED_OUT,
    EventType.CANCELLED: JobStatus.CANCELLED,
}


@dataclasses.dataclass(frozen=True, slots=True)
class StoredResult:
    """Where a success event's result went: scalars for the job, URIs of the blobs."""

    summary: dict[str, Any] | None
    uris: dict[str, str]


def new_job_for(event: CallbackEvent, *, now: float) -> Job:
    meta = event.metadata
    return Job(
        job_id=meta.job_id or derived_job_id(event.call_id),
        call_id=event.call_id,
        status=JobStatus.PENDING,
        created_at=now,
        updated_at=now,
        app=meta.app,
        function=meta.function,
        batch_id=meta.batch_id,
        metadata=meta.model_dump(exclude_none=True, exclude={"job_id", "batch_id"}),
    )


def apply_event(
    job: Job | None,
    event: CallbackEvent,
    *,
    signed_at: int,
    now: float,
    result: StoredResult | None = None,
    source: str = "webhook",
) -> Decision:
    """Return the job after ``event`` and what happened; never mutates ``job``."""
    job = new_job_for(event, now=now) if job is None else dataclasses.replace(job)
    job.events_seen += 1
    job.updated_at = now
    job.last_event_at = max(job.last_event_at or 0, signed_at)
    job.app = job.app or event.metadata.app
    job.function = job.function or event.metadata.function
    job.batch_id = job.batch_id or event.metadata.batch_id

    if job.status.terminal:
        return Decision(job, f"ignored: job already {job.status.value}")

    if event.type is EventType.STARTED:
        # A started event that arrives after progress still tells when the call began.
        job.started_at = min(job.started_at or signed_at, signed_at)
        if job.status is JobStatus.PENDING:
            job.status = JobStatus.RUNNING
            return Decision(job, "applied")
        return Decision(job, "ignored: already running")

    if event.type is EventType.PROGRESS:
        assert event.progress is not None  # the schema requires it
        job.status = JobStatus.RUNNING
        if job.started_at is None:
            job.started_at = signed_at
        current = job.progress_percent
        newer = (
            current is None
            or event.progress.percent > current
            or (event.progress.percent == current and signed_at > (job.progress_at or 0))
        )
        if not newer:
            return Decision(job, "ignored: older progress")
        job.progress_percent = event.progress.percent
        job.progress_message = event.progress.message
        job.progress_at = signed_at
        return Decision(job, "applied")

    job.status = TERMINAL_FOR_EVENT[event.type]
    job.finished_at = signed_at
    job.completed_by = source
    job.execution_time = event.execution_time
    if event.type is EventType.SUCCESS:
        job.progress_percent = 100.0
        if result is not None:
            job.result = result.summary
            job.result_uris = result.uris
    if event.error is not None:
        job.error = event.error.model_dump(exclude_none=True)
    job.schedule_notification(now=now)  # in the same write as the terminal state
    return Decision(job, "applied")
