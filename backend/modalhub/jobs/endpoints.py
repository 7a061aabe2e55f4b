"""Reading jobs (operator token required)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from modalhub.hub import HubDep
from modalhub.security import OperatorDep
from modalhub.storage.models import Job

router = APIRouter(tags=["jobs"])


@router.get("/api/v3/jobs/{job_id}", response_model=Job)
async def get_job(job_id: str, hub: HubDep, _: OperatorDep) -> Job:
    job = await hub.store.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job


@router.get("/api/v3/executions/{call_id}", response_model=Job)
async def get_execution(call_id: str, hub: HubDep, _: OperatorDep) -> Job:
    job = await hub.store.get_job_by_call(call_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job for call {call_id!r}")
    return job
