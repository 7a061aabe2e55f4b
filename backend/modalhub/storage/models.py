"""Records the stores keep: inbox entries and jobs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}
)


class NotifyStatus(StrEnum):
    """Where a notification to a job's or batch's ``notify_url`` stands."""

    PENDING = "pending"  # due at its due_at (or being delivered under a claim)
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed; an operator can redeliver


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A verified callback exactly as received, stored before it is acknowledged."""

    event_id: str
    call_id: str
    type: str
    body: bytes  # the raw signed JSON, so processing can always be re-run from it
    signed_at: int  # the signed webhook timestamp (unix seconds)
    received_at: float
    processed_at: float | None = None
    outcome: str | None = None
    # Who reported it: "webhook" (a signed callback), "poller" (the executor's status),
    # "operator" (a cancel through the API). Recorded on the job as completed_by.
    source: str = "webhook"


@dataclass(slots=True)
class Notification:
    """A job's or batch's outbox entry for its ``notify_url``: owed once the record ends.

    The record's ending transaction marks it pending, so it is sent even if the process
    dies right after (notifications/outbox.py does the rest).
    """

    url: str
    status: NotifyStatus | None = None  # None until the record ends
    attempts: int = 0
    due_at: float | None = None  # when the next attempt may start; None: none due
    error: str | None = None  # why the last attempt failed
    delivered_at: float | None = None

    def schedule(self, *, now: float) -> None:
        """Due now, from a fresh count of attempts."""
        self.status = NotifyStatus.PENDING
        self.attempts = 0
        self.due_at = now
        self.error = None


class Notifiable:
    """What jobs and batches share: an optional notification, owed once they end."""

    __slots__ = ()
    notification: Notification | None

    @property
    def ended(self) -> bool:
        raise NotImplementedError

    @property
    def notify_due_at(self) -> float | None:
        """The field the stores index to find due notifications."""
        return self.notification.due_at if self.notification is not None else None

    def schedule_notification(self, *, now: float) -> None:
        if self.notification is not None:
            self.notification.schedule(now=now)


@dataclass(slots=True)
class Job(Notifiable):
    job_id: str
    call_id: str | None
    status: JobStatus
    created_at: float
    updated_at: float
    app: str | None = None
    function: str | None = None
    batch_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress_percent: float | None = None
    progress_message: str | None = None
    progress_at: int | None = None  # signed timestamp of the progress shown
    result: dict[str, Any] | None = None  # small scalars only; the rest is in blobs
    result_uris: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    execution_time: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    events_seen: int = 0  # inbox entries processed for this job, each exactly once
    last_event_at: int | None = None
    completed_by: str | None = None  # which path set the terminal state ("webhook", ...)
    notification: Notification | None = None

    @property
    def ended(self) -> bool:
        return self.status.terminal


@dataclass(slots=True)
class Batch(Notifiable):
    """Jobs submitted together; ``counts`` (jobs per status) change in the same
    transaction as the jobs, so the batch completes exactly when its last job does."""

    batch_id: str
    total: int
    created_at: float
    counts: dict[str, int] = field(default_factory=dict)
    completed_at: float | None = None
    manifest_uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    notification: Notification | None = None  # owed when its last job ends

    @property
    def ended(self) -> bool:
        return self.completed_at is not None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(status.value, 0) for status in TERMINAL_STATUSES)

    def count(self, old: JobStatus | None, new: JobStatus, *, now: float) -> bool:
        """Move one job from ``old`` (None: new to the batch) to ``new``; True when this
        completed the batch."""
        if old == new:
            return False
        if old is not None:
            left = self.counts.get(old.value, 0) - 1
            if left > 0:
                self.counts[old.value] = left
            else:
                self.counts.pop(old.value, None)
        self.counts[new.value] = self.counts.get(new.value, 0) + 1
        if self.completed_at is None and self.finished >= self.total:
            self.completed_at = now
            self.schedule_notification(now=now)  # in the same write as the completion
            return True
        return False


def _to_dict(record: Job | Batch) -> dict[str, Any]:
    data = {name: getattr(record, name) for name in type(record).__dataclass_fields__}
    if record.notification is not None:
        data["notification"] = dataclasses.asdict(record.notification)
    return data


def _notification(data: dict[str, Any]) -> None:
    found = data.get("notification")
    if found is not None:
        if found.get("status") is not None:
            found = {**found, "status": NotifyStatus(found["status"])}
        data["notification"] = Notification(**found)


def batch_to_dict(batch: Batch) -> dict[str, Any]:
    return _to_dict(batch)


def batch_from_dict(data: dict[str, Any]) -> Batch:
    known = {key: value for key, value in data.items() if key in Batch.__dataclass_fields__}
    _notification(known)
    return Batch(**known)


def job_to_dict(job: Job) -> dict[str, Any]:
    """A JSON-ready copy of the job (the API and the stores share this shape)."""
    return _to_dict(job)


def job_from_dict(data: dict[str, Any]) -> Job:
    known = {key: value for key, value in data.items() if key in Job.__dataclass_fields__}
    known["status"] = JobStatus(known["status"])
    _notification(known)
    return Job(**known)
