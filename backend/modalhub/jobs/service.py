"""Submitting, registering and cancelling jobs: the hub's own writes besides callbacks.

State changes the hub decides itself (a cancel, an outcome the poller learnt from the
executor) go through the inbox like callbacks, as entries with their own source, so
the one state machine applies them in order with the rest and exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from ulid import ULID

from modalhub.executions.protocols import ExecutionState, ExecutionStatus
from modalhub.hub import Hub
from modalhub.ingest.schemas import EventType
from modalhub.jobs.processing import process_entries
from modalhub.storage.models import InboxEntry, Job, JobStatus, Notification

log = structlog.get_logger(__name__)

EVENT_FOR_STATE = {
    ExecutionState.SUCCEEDED: EventType.SUCCESS,
    ExecutionState.FAILED: EventType.FAILURE,
    ExecutionState.TIMED_OUT: EventType.TIMEOUT,
    ExecutionState.CANCELLED: EventType.CANCELLED,
    ExecutionState.EXPIRED: EventType.FAILURE,
}


def pending_job(
    *,
    call_id: str,
    job_id: str | None = None,
    app: str | None = None,
    function: str | None = None,
    batch_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    notify_url: str | None = None,
) -> Job:
    """A job the hub records before any callback: pending, with what it was told."""
    now = time.time()
    return Job(
        job_id=job_id or f"job-{ULID()}",
        call_id=call_id,
        status=JobStatus.PENDING,
        created_at=now,
        updated_at=now,
        app=app,
        function=function,
        batch_id=batch_id,
        metadata=dict(metadata or {}),
        notification=Notification(notify_url) if notify_url else None,
    )


async def submit_job(
    hub: Hub,
    *,
    app: str,
    function: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    batch_id: str | None,
    notify_url: str | None = None,
) -> Job:
    """Spawn the function and store its call id at once (seed 002): the job can always be
    found again from Modal, whatever happens to this process next."""
    call_id = await hub.executor.spawn(app, function, args=args, kwargs=kwargs)
    job = pending_job(
        call_id=call_id,
        app=app,
        function=function,
        batch_id=batch_id,
        metadata=metadata,
        notify_url=notify_url,
    )
    try:
        job = await hub.store.register_job(job)
    except Exception:
        # Nothing records the call: stop it rather than leave it running untracked.
        await hub.executor.cancel(call_id)
        raise
    log.info("job submitted", job_id=job.job_id, call_id=call_id, app=app, function=function)
    return job


async def register_execution(hub: Hub, job: Job) -> Job:
    registered = await hub.store.register_job(job)
    log.info("execution registered", job_id=registered.job_id, call_id=registered.call_id)
    return registered


async def record_outcome(
    hub: Hub, call_id: str, status: ExecutionStatus, *, source: str, apply_now: bool
) -> None:
    """Put what the hub learnt about a call into the inbox; with ``apply_now`` also apply
    it before returning (the processor would otherwise, shortly)."""
    event_type = EVENT_FOR_STATE[status.state]
    body: dict[str, Any] = {"type": event_type.value, "call_id": call_id}
    if status.state is ExecutionState.SUCCEEDED:
        body["result"] = status.result
    if status.error is not None or status.state is ExecutionState.EXPIRED:
        error = status.error or {
            "type": "OutputExpired",
            "message": "the executor no longer has this call's outcome",
        }
        body["error"] = {key: error.get(key) for key in ("type", "message", "traceback")}
    now = time.time()
    entry = InboxEntry(
        event_id=f"{call_id}:{source}:{status.state.value}",
        call_id=call_id,
        type=event_type.value,
        body=json.dumps(body, default=repr).encode(),
        signed_at=int(now),
        received_at=now,
        source=source,
    )
    created = await hub.store.put_inbox(entry)
    if created and apply_now:
        await process_entries(hub.store, hub.blobs, [entry])
    elif created and hub.processor is not None:
        hub.processor.notify()


async def cancel_job(hub: Hub, job: Job) -> Job:
    """Cancel on the executor, then record it. Idempotent; a finished job stays as it is."""
    if job.status.terminal or job.call_id is None:
        return job
    await hub.executor.cancel(job.call_id)
    await record_outcome(
        hub,
        job.call_id,
        ExecutionStatus(ExecutionState.CANCELLED),
        source="operator",
        apply_now=True,
    )
    log.info("job cancelled", job_id=job.job_id, call_id=job.call_id)
    return await hub.store.get_job(job.job_id) or job
