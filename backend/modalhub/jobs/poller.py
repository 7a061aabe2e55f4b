"""Ask the executor about jobs still in flight, for callbacks that never arrive (a
function without the SDK, a container killed at its hard timeout). Never settles a job
by age alone: only what the executor says about the call (seed 002)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import structlog
from ulid import ULID

from modalhub import metrics
from modalhub.executions.protocols import ExecutionState, ExecutorUnavailableError
from modalhub.hub import Hub
from modalhub.jobs.service import record_outcome
from modalhub.storage.models import JobStatus
from modalhub.storage.protocols import JobFilter, StoreUnavailableError

log = structlog.get_logger(__name__)

ACTIVE = JobFilter(statuses=frozenset({JobStatus.PENDING, JobStatus.RUNNING}))
POLLER_LEASE = "poller"


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
    """Poll every interval, in every API process. With an executor whose calls any process
    can ask about (Modal), only the process holding the poller lease polls, so replicas do
    not multiply the calls to Modal. The lease lasts a few intervals and is renewed each
    round: when its holder dies, another process takes over within that time."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{ULID()}"
    interval = hub.settings.poll_interval_seconds
    shared = hub.executor.shared_calls
    leading = False
    try:
        while True:
            try:
                if shared:
                    leading = await _hold_lease(hub, holder, leading, ttl=max(3 * interval, 30.0))
                if leading or not shared:
                    await poll_once(hub)
            except (StoreUnavailableError, ExecutorUnavailableError) as exc:
                log.warning("poll skipped: backend unavailable", error=str(exc))
            except Exception:
                log.exception("poll failed; will retry")
            await asyncio.sleep(interval)
    finally:
        if leading:  # hand over at once rather than when the lease runs out
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await hub.store.release_lease(POLLER_LEASE, holder)


async def _hold_lease(hub: Hub, holder: str, leading: bool, *, ttl: float) -> bool:
    held = await hub.store.acquire_lease(POLLER_LEASE, holder, ttl_seconds=ttl, now=time.time())
    if held != leading:
        log.info("poller lease taken" if held else "poller lease held elsewhere", holder=holder)
    metrics.POLLER_LEADER.set(1 if held else 0)
    return held
