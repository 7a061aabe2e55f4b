"""The narrow, async interfaces every backend implements."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from modalhub.storage.models import Batch, InboxEntry, Job, JobStatus


def derived_job_id(call_id: str) -> str:
    """The id of a job first seen through a callback that named no usable job id."""
    return f"job-{call_id}"


def encode_cursor(created_at: float, job_id: str) -> str:
    """A listing cursor: the sort key of the last job on a page, opaque to clients."""
    raw = json.dumps([created_at, job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(created_at), str(job_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("malformed cursor") from exc


class BatchExistsError(ValueError):
    """A batch with this id exists already."""


class JobIdTakenError(ValueError):
    """The job id is already used by a job of another call."""


def merge_registration(existing: Job, registered: Job) -> Job:
    """The job a callback created, completed with what a registration knows."""
    existing.app = existing.app or registered.app
    existing.function = existing.function or registered.function
    existing.batch_id = existing.batch_id or registered.batch_id
    existing.metadata = {**registered.metadata, **existing.metadata}
    if existing.notification is None and registered.notification is not None:
        existing.notification = registered.notification
        if existing.status.terminal:  # it ended before the registration arrived
            existing.schedule_notification(now=time.time())
    return existing


class StoreUnavailableError(Exception):
    """The backend could not be reached or could not commit; the caller may retry."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What applying one inbox entry does: the job to write (or None) and a short outcome."""

    job: Job | None
    outcome: str


# Called inside the store's transaction with the job the event belongs to (None if the
# hub has never seen the call) and the entry. Pure: it may run more than once on retry.
DecideFn = Callable[[Job | None, InboxEntry], Decision]

# A change to one job or batch outside the inbox (its notification bookkeeping). Pure,
# like DecideFn: it may run more than once.
ChangeFn = Callable[[Job], Job | None]
BatchChangeFn = Callable[[Batch], Batch | None]

R = TypeVar("R", Job, Batch)

# What only the inbox may move: batch counts must stay exact.
_FIXED = {
    Job: ("job_id", "status", "batch_id"),
    Batch: ("batch_id", "total", "counts", "completed_at"),
}


def apply_change(before: R | None, change: Callable[[R], R | None]) -> R | None:
    """What ``update_job``/``update_batch`` write: ``change`` applied to a copy (so the
    check sees what it moved, even in place), or None to leave the record as it is.
    ValueError if it moved what only the inbox may."""
    if before is None:
        return None
    after = change(copy.deepcopy(before))
    fixed = _FIXED[type(before)]
    if after is not None and any(getattr(after, n) != getattr(before, n) for n in fixed):
        raise ValueError(f"an update may not change {', '.join(fixed)}")
    return after


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing returns; None means any."""

    statuses: frozenset[JobStatus] | None = None
    app: str | None = None
    function: str | None = None
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None  # opaque; None on the last page


@dataclass(frozen=True, slots=True)
class InboxBacklog:
    pending: int
    oldest_received_at: float | None  # unix seconds; None when nothing is pending


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    entry: InboxEntry
    job: Job | None
    outcome: str
    completed_batch: str | None = None  # the batch this entry's job completed, if any


class JobStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the store can serve reads and writes."""

    async def put_inbox(self, entry: InboxEntry) -> bool:
        """Durably store the entry unless its event id exists. True if it was created."""

    async def pending_inbox(self, *, limit: int) -> list[InboxEntry]:
        """Unprocessed entries, oldest first."""

    async def inbox_backlog(self) -> InboxBacklog: ...

    async def apply_inbox(
        self, entries: Sequence[InboxEntry], decide: DecideFn
    ) -> list[AppliedEntry]:
        """For each still-unprocessed entry, atomically: load the job of its call, decide,
        write the job, mark the entry processed with the outcome. Entries already processed
        are skipped (not returned), so concurrent or repeated runs apply an entry once.
        A new job whose id is already taken by another call gets ``derived_job_id``."""

    async def register_job(self, job: Job) -> Job:
        """Store a job for a call the hub spawned or was told about (``job.call_id`` set).
        If the call has a job already (its first callback got there first), that job is
        returned instead, completed with the app, function, batch and metadata it lacked.
        A ``job_id`` that belongs to another call raises JobIdTakenError. A job that joins
        a batch is counted in it in the same transaction; the returned job's
        ``completed_batch`` is not reported here: read the batch."""

    async def get_job(self, job_id: str) -> Job | None: ...

    async def create_batch(self, batch: Batch) -> None:
        """Create the batch (before its jobs); BatchExistsError if the id is used."""

    async def get_batch(self, batch_id: str) -> Batch | None: ...

    async def set_batch_manifest(self, batch_id: str, uri: str) -> None: ...

    async def get_job_by_call(self, call_id: str) -> Job | None: ...

    async def update_job(self, job_id: str, change: ChangeFn) -> Job | None:
        """Atomically read the job, apply ``change`` and write what it returns (None:
        leave the job as it is). Returns the job written, or None. ``change`` may run
        more than once; it must not move the job's id, status or batch (only the inbox
        does, so batch counts stay exact): ValueError if it does."""

    async def update_batch(self, batch_id: str, change: BatchChangeFn) -> Batch | None:
        """As ``update_job``, for a batch; ``change`` may not move its counts or completion."""

    async def acquire_lease(
        self, name: str, holder: str, *, ttl_seconds: float, now: float
    ) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl_seconds``.
        True if ``holder`` holds it now; False while another holder's lease runs."""

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if ``holder`` holds it, so another may take it at once."""

    async def due_notifications(self, *, now: float, limit: int) -> list[Job | Batch]:
        """Jobs and batches whose notification is due (``notify_due_at <= now``), earliest
        first."""

    async def list_jobs(
        self, job_filter: JobFilter, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        """Jobs matching the filter, oldest ``created_at`` first (ties by job id), a page
        at a time. A cursor from one page continues after its last job, even when jobs
        are added or change status in between. A malformed cursor raises ValueError."""


@dataclass(frozen=True, slots=True)
class BlobRef:
    key: str
    uri: str
    created: bool  # False when the blob already existed (a re-run): never overwritten


class BlobStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def put_if_absent(self, key: str, data: bytes, *, content_type: str) -> BlobRef: ...

    async def get(self, key: str) -> bytes | None: ...
