"""Reading jobs (operator token required)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field, HttpUrl, UrlConstraints

from modalhub.hub import Hub, HubDep
from modalhub.ingest.schemas import Identifier
from modalhub.jobs import batches, service
from modalhub.jobs.manifests import write_manifest
from modalhub.security import OperatorDep
from modalhub.storage.models import Job, JobStatus, Notification
from modalhub.storage.protocols import BatchExistsError, JobFilter, JobIdTakenError

router = APIRouter(tags=["jobs"])

# Where a job's end is POSTed; http(s) only, as long as a browser would take.
NotifyUrl = Annotated[HttpUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])]

ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING})


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class ExecutionList(BaseModel):
    executions: list[Job]
    next_cursor: str | None


class JobSubmission(BaseModel):
    app: str = Field(min_length=1, max_length=200, description="Modal app name")
    function: str = Field(min_length=1, max_length=200, description="function name in the app")
    args: list[Any] = Field(default_factory=list, max_length=1000)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    batch_id: Identifier | None = None
    notify_url: NotifyUrl | None = None


class SubmittedJob(BaseModel):
    job_id: str
    call_id: str | None
    status: JobStatus
    status_url: str


class ExecutionRegistration(BaseModel):
    """A call spawned elsewhere (`Function.spawn` in your own code) for the hub to track."""

    call_id: Identifier
    job_id: Identifier | None = None
    app: str | None = Field(default=None, max_length=200)
    function: str | None = Field(default=None, max_length=200)
    batch_id: Identifier | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    notify_url: NotifyUrl | None = None


def _notify_url(hub: Hub, url: HttpUrl | None) -> str | None:
    if url is not None and not hub.settings.notify_keys:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "notify_url needs MODALHUB_NOTIFY_SECRET on the hub: it signs every notification",
        )
    return str(url) if url is not None else None


def _submitted(request: Request, job: Job) -> SubmittedJob:
    url = str(request.url_for("get_job", job_id=job.job_id))
    return SubmittedJob(job_id=job.job_id, call_id=job.call_id, status=job.status, status_url=url)


@router.post("/api/v3/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=SubmittedJob)
async def submit_job(
    submission: JobSubmission, request: Request, hub: HubDep, _: OperatorDep
) -> SubmittedJob:
    """Spawn ``app``/``function`` on the executor; answers once the call id is stored.
    With ``notify_url``, the hub POSTs the finished job there (signed, retried)."""
    notify_url = _notify_url(hub, submission.notify_url)
    job = await service.submit_job(
        hub,
        app=submission.app,
        function=submission.function,
        args=submission.args,
        kwargs=submission.kwargs,
        metadata=submission.metadata,
        batch_id=submission.batch_id,
        notify_url=notify_url,
    )
    return _submitted(request, job)


@router.post("/api/v3/executions", status_code=status.HTTP_201_CREATED, response_model=Job)
async def register_execution(
    registration: ExecutionRegistration, hub: HubDep, _: OperatorDep
) -> Job:
    job = service.pending_job(
        call_id=registration.call_id,
        job_id=registration.job_id,
        app=registration.app,
        function=registration.function,
        batch_id=registration.batch_id,
        metadata=registration.metadata,
        notify_url=_notify_url(hub, registration.notify_url),
    )
    try:
        return await service.register_execution(hub, job)
    except JobIdTakenError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.post("/api/v3/jobs/{job_id}/cancel", response_model=Job)
async def cancel_job(job_id: str, hub: HubDep, _: OperatorDep) -> Job:
    job = await hub.store.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return await service.cancel_job(hub, job)


@router.post("/api/v3/webhooks/executions/{call_id}/cancel", response_model=Job)
async def cancel_execution(call_id: str, hub: HubDep, _: OperatorDep) -> Job:
    job = await hub.store.get_job_by_call(call_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job for call {call_id!r}")
    return await service.cancel_job(hub, job)


class BatchSubmission(BaseModel):
    jobs: list[JobSubmission] = Field(min_length=1, max_length=1000)
    batch_id: Identifier | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    notify_url: NotifyUrl | None = Field(
        default=None, description="told once, when the batch's last job has ended"
    )


class SubmittedBatch(BaseModel):
    batch_id: str
    total: int
    status_url: str
    jobs: list[SubmittedJob]


class BatchView(BaseModel):
    batch_id: str
    total: int
    counts: dict[str, int]
    finished: int
    complete: bool
    created_at: float
    completed_at: float | None
    manifest_uri: str | None
    metadata: dict[str, Any]
    jobs_url: str
    notification: Notification | None


@router.post("/api/v3/batches", status_code=status.HTTP_202_ACCEPTED, response_model=SubmittedBatch)
async def submit_batch(
    submission: BatchSubmission, request: Request, hub: HubDep, _: OperatorDep
) -> SubmittedBatch:
    """Submit many jobs at once. A job whose function cannot be spawned is recorded as
    failed in the batch (its error says why), so the batch still completes."""
    if any(job.batch_id for job in submission.jobs):
        raise HTTPException(422, "jobs of a batch take the batch's id: leave their batch_id out")
    specs = [
        batches.JobSpec(
            job.app,
            job.function,
            job.args,
            job.kwargs,
            job.metadata,
            notify_url=_notify_url(hub, job.notify_url),
        )
        for job in submission.jobs
    ]
    try:
        batch, jobs = await batches.submit_batch(
            hub,
            specs,
            batch_id=submission.batch_id,
            metadata=submission.metadata,
            notify_url=_notify_url(hub, submission.notify_url),
        )
    except BatchExistsError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return SubmittedBatch(
        batch_id=batch.batch_id,
        total=batch.total,
        status_url=str(request.url_for("get_batch", batch_id=batch.batch_id)),
        jobs=[_submitted(request, job) for job in jobs],
    )


@router.get("/api/v3/batches/{batch_id}", response_model=BatchView)
async def get_batch(batch_id: str, request: Request, hub: HubDep, _: OperatorDep) -> BatchView:
    batch = await hub.store.get_batch(batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch {batch_id!r}")
    if batch.completed_at is not None and batch.manifest_uri is None:
        # Completed, but the manifest was not written (the process stopped in between).
        batch.manifest_uri = await write_manifest(hub.store, hub.blobs, batch_id)
    jobs_url = str(request.url_for("list_jobs").include_query_params(batch_id=batch_id))
    return BatchView(
        batch_id=batch.batch_id,
        total=batch.total,
        counts=batch.counts,
        finished=batch.finished,
        complete=batch.completed_at is not None,
        created_at=batch.created_at,
        completed_at=batch.completed_at,
        manifest_uri=batch.manifest_uri,
        metadata=batch.metadata,
        jobs_url=jobs_url,
        notification=batch.notification,
    )


Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Filter = Annotated[str | None, Query(max_length=200)]


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


@router.get("/api/v3/jobs", response_model=JobList)
async def list_jobs(
    hub: HubDep,
    _: OperatorDep,
    status_: Annotated[list[JobStatus] | None, Query(alias="status")] = None,
    app: Filter = None,
    function: Filter = None,
    batch_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JobList:
    """Jobs, oldest first, filtered by status (repeatable), app, function and batch."""
    statuses = frozenset(status_) if status_ else None
    jobs, next_cursor = await _page(hub, statuses, app, function, batch_id, cursor, limit)
    return JobList(jobs=jobs, next_cursor=next_cursor)


@router.get("/api/v3/webhooks/active-executions", response_model=ExecutionList)
async def active_executions(
    hub: HubDep,
    _: OperatorDep,
    app: Filter = None,
    function: Filter = None,
    batch_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> ExecutionList:
    """Calls not finished yet (pending or running), oldest first."""
    jobs, next_cursor = await _page(hub, ACTIVE_STATUSES, app, function, batch_id, cursor, limit)
    return ExecutionList(executions=jobs, next_cursor=next_cursor)


async def _page(
    hub: Hub,
    statuses: frozenset[JobStatus] | None,
    app: str | None,
    function: str | None,
    batch_id: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Job], str | None]:
    job_filter = JobFilter(statuses=statuses, app=app, function=function, batch_id=batch_id)
    try:
        page = await hub.store.list_jobs(job_filter, limit=limit, cursor=cursor)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "malformed cursor") from None
    return page.jobs, page.next_cursor
