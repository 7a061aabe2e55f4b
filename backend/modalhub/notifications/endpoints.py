"""Operator control of notifications: send a finished job's or batch's notification again."""

from __future__ import annotations

import functools
import time
from typing import Any

from fastapi import APIRouter, HTTPException, status

from modalhub.hub import Hub, HubDep
from modalhub.notifications.outbox import redeliver
from modalhub.security import OperatorDep
from modalhub.storage.models import Job, Notifiable, batch_to_dict

router = APIRouter(tags=["jobs"])


@router.post(
    "/api/v3/jobs/{job_id}/notify", status_code=status.HTTP_202_ACCEPTED, response_model=Job
)
async def redeliver_job_notification(job_id: str, hub: HubDep, _: OperatorDep) -> Job:
    """Queue the job's notification again with a fresh set of attempts: after a receiver
    was fixed, or to replay one that was delivered."""
    job = await hub.store.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    _check_redeliverable(hub, job, f"job {job_id!r}", f"is {job.status.value}")
    queued = await hub.store.update_job(job_id, functools.partial(redeliver, now=time.time()))
    return queued or job


@router.post("/api/v3/batches/{batch_id}/notify", status_code=status.HTTP_202_ACCEPTED)
async def redeliver_batch_notification(
    batch_id: str, hub: HubDep, _: OperatorDep
) -> dict[str, Any]:
    """As for a job: the batch's completion notification, again."""
    batch = await hub.store.get_batch(batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch {batch_id!r}")
    _check_redeliverable(hub, batch, f"batch {batch_id!r}", "is not complete")
    queued = await hub.store.update_batch(batch_id, functools.partial(redeliver, now=time.time()))
    return batch_to_dict(queued or batch)


def _check_redeliverable(hub: Hub, record: Notifiable, name: str, not_ended: str) -> None:
    if record.notification is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{name} has no notify_url")
    if not record.ended:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{name} {not_ended}: it is notified when it ends"
        )
    if not hub.settings.notify_keys:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no MODALHUB_NOTIFY_SECRET on the hub to sign with"
        )
