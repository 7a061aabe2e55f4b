"""Ask the executor about jobs still in flight, for callbacks that never arrive (a
function without the SDK, a container killed at its hard timeout). Never settles a job
by age alone: only what the executor says about the call (seed 002)."""

from __future__ import annotations

import asyncio
import time

import structlog

from modalhub.executions.protocols import ExecutionState, ExecutorUnavailableError
from modalhub.hub import Hub
from modalhub.jobs.service import record_outcome
from modalhub.storage.models import JobStatus
from modalhub.storage.protocols import JobFilter, StoreUnavailableError

log = structlog.get_logger(__name__)

ACTIVE = JobFilter(statuses=frozenset({JobStatus.PENDING, JobStatus.RUNNING}))


async def poll_once(hub: Hub) -> int:
    """One pass over the active jobs; returns how many outcomes it recorded."""
    recorded = 0
    cursor: str | None = None
    while True:
        page = await hub.store.list_jobs(ACTIVE, limit=200, cursor=cursor)
        for job in page.jobs:
            if job.call_id is None:
                continue
            status = await hub.executor.status(job.call_id)
            if status.state is ExecutionState.RUNNING:
                continue
            if status.state is ExecutionState.EXPIRED and (
                time.time() - job.updated_at < hub.settings.poll_expired_grace_seconds
            ):
                continue  # e.g. a call of another hub process: its callbacks may still come
            await record_outcome(hub, job.call_id, status, source="poller", apply_now=False)
            log.info(
                "poller settled a job",
                job_id=job.job_id,
                call_id=job.call_id,
                state=status.state.value,
            )
            recorded += 1
        if page.next_cursor is None:
            return recorded
        cursor = page.next_cursor


async def run_poller(hub: Hub) -> None:
    while True:
        try:
            await poll_once(hub)
        except (StoreUnavailableError, ExecutorUnavailableError) as exc:
            log.warning("poll skipped: backend unavailable", error=str(exc))
        except Exception:
            log.exception("poll failed; will retry")
        await asyncio.sleep(hub.settings.poll_interval_seconds)
