"""The outbox steps: claim, settle, redeliver and the retry schedule (pure)."""

from __future__ import annotations

import copy

import pytest

from modalhub.notifications.outbox import AttemptResult, RetryPolicy, claim, redeliver, settle
from modalhub.storage.models import Batch, Job, JobStatus, Notification, NotifyStatus

POLICY = RetryPolicy(max_attempts=3, first_delay=5.0, max_delay=60.0)
FAILED = AttemptResult(delivered=False, error="HTTP 503")


def ended_job(job_status: JobStatus = JobStatus.SUCCEEDED, **owed: object) -> Job:
    job = Job("job-1", "fc-1", job_status, 1.0, 1.0, notification=Notification("http://x/hook"))
    job.schedule_notification(now=100.0)
    for name, value in owed.items():
        setattr(job.notification, name, value)
    return job


def owed(record: Job | Batch | None) -> Notification:
    assert record is not None and record.notification is not None
    return record.notification


def test_schedule_needs_somewhere_to_send() -> None:
    job = Job("job-1", "fc-1", JobStatus.FAILED, 1.0, 1.0)
    job.schedule_notification(now=5.0)
    assert job.notification is None and job.notify_due_at is None
    assert owed(ended_job()).status is NotifyStatus.PENDING and ended_job().notify_due_at == 100.0


def test_claim_takes_a_due_notification_once() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert (owed(job).attempts, owed(job).due_at) == (1, 140.0)
    # The lease holds it: another notifier at the same moment finds nothing to claim.
    assert claim(copy.deepcopy(job), now=100.0, lease_seconds=40.0) is None
    # Once the lease ran out (its holder died), it can be claimed again.
    again = claim(copy.deepcopy(job), now=140.0, lease_seconds=40.0)
    assert owed(again).attempts == 2


def test_claim_ignores_what_is_not_due() -> None:
    assert claim(ended_job(due_at=200.0), now=100.0, lease_seconds=1) is None
    delivered = ended_job(status=NotifyStatus.DELIVERED, due_at=None)
    assert claim(delivered, now=100.0, lease_seconds=1) is None
    assert claim(Job("j", "c", JobStatus.FAILED, 1.0, 1.0), now=100.0, lease_seconds=1) is None


def test_a_delivery_settles_it() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert job is not None
    done = owed(
        settle(job, attempt=1, result=AttemptResult(delivered=True), policy=POLICY, now=101.0)
    )
    assert (done.status, done.due_at, done.delivered_at) == (NotifyStatus.DELIVERED, None, 101.0)


def test_failures_back_off_then_give_up() -> None:
    job: Job | None = ended_job()
    due = []
    for attempt in (1, 2, 3):
        job = claim(job or ended_job(), now=owed(job).due_at or 0, lease_seconds=40.0)
        job = settle(job or ended_job(), attempt=attempt, result=FAILED, policy=POLICY, now=1e3)
        due.append(owed(job).due_at)
    assert due == [1005.0, 1010.0, None]  # first_delay, then doubled, then given up
    final = owed(job)
    assert (final.status, final.error, final.attempts) == (NotifyStatus.FAILED, "HTTP 503", 3)


def test_gone_stops_at_once() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert job is not None
    gone = AttemptResult(delivered=False, error="HTTP 410", permanent=True)
    settled = settle(job, attempt=1, result=gone, policy=POLICY, now=101.0)
    assert owed(settled).status is NotifyStatus.FAILED


def test_a_stale_attempt_does_not_reschedule_a_newer_one() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert job is not None
    owed(job).attempts = 2  # our lease ran out; another notifier claimed it since
    assert settle(job, attempt=1, result=FAILED, policy=POLICY, now=150.0) is None
    # ... but a late success still counts: the subscriber has it.
    done = settle(job, attempt=1, result=AttemptResult(delivered=True), policy=POLICY, now=150.0)
    assert owed(done).status is NotifyStatus.DELIVERED


@pytest.mark.parametrize(
    ("failed", "retry_after", "expected"),
    [(1, None, 5.0), (3, None, 20.0), (10, None, 60.0), (1, 30.0, 30.0), (1, 9999.0, 60.0)],
)
def test_retry_delay(failed: int, retry_after: float | None, expected: float) -> None:
    assert POLICY.delay(failed, retry_after=retry_after, jitter=1.0) == expected


def test_redeliver_restarts_the_attempts() -> None:
    failed = ended_job(status=NotifyStatus.FAILED, attempts=3, due_at=None)
    again = owed(redeliver(failed, now=500.0))
    assert (again.status, again.attempts, again.due_at) == (NotifyStatus.PENDING, 0, 500.0)
    assert redeliver(ended_job(JobStatus.RUNNING), now=500.0) is None


def test_a_batch_is_notified_once_complete() -> None:
    batch = Batch("b-1", total=2, created_at=1.0, notification=Notification("http://x/b"))
    assert batch.count(None, JobStatus.SUCCEEDED, now=10.0) is False
    assert owed(batch).status is None and redeliver(batch, now=11.0) is None  # not complete
    assert batch.count(None, JobStatus.FAILED, now=20.0) is True
    assert (owed(batch).status, owed(batch).due_at) == (NotifyStatus.PENDING, 20.0)
    assert owed(claim(batch, now=20.0, lease_seconds=40.0)).attempts == 1
