"""Operator control of notifications: send a finished job's notification again."""

from __future__ import annotations

import functools
import time

from fastapi import APIRouter, HTTPException, status

from modalhub.hub import HubDep
from modalhub.notifications import outbox
from modalhub.security import OperatorDep
from modalhub.storage.models import Job

router = APIRouter(tags=["jobs"])


@router.post(
    "/api/v3/jobs/{job_id}/notify", status_code=status.HTTP_202_ACCEPTED, response_model=Job
)
async def redeliver_notification(job_id: str, hub: HubDep, _: OperatorDep) -> Job:
    """Queue the job's notification again with a fresh set of attempts: after a receiver
    was fixed, or to replay one that was delivered."""
    job = await hub.store.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    if job.notify_url is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id!r} has no notify_url")
    if not job.status.terminal:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job_id!r} is {job.status.value}: it is notified when it ends",
        )
    if not hub.settings.notify_keys:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no MODALHUB_NOTIFY_SECRET on the hub to sign with"
        )
    queued = await hub.store.update_job(
        job_id, functools.partial(outbox.redeliver, now=time.time())
    )
    return queued or job
