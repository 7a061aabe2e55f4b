"""The outbox steps: claim, settle, redeliver and the retry schedule (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from modalhub.notifications.outbox import AttemptResult, RetryPolicy, claim, redeliver, settle
from modalhub.storage.models import Batch, Job, JobStatus, NotifyStatus

POLICY = RetryPolicy(max_attempts=3, first_delay=5.0, max_delay=60.0)
FAILED = AttemptResult(delivered=False, error="HTTP 503")


def ended_job(**fields: object) -> Job:
    job = Job(
        job_id="job-1",
        call_id="fc-1",
        status=JobStatus.SUCCEEDED,
        created_at=1.0,
        updated_at=1.0,
        notify_url="http://127.0.0.1:9/hook",
    )
    job.schedule_notification(now=100.0)
    return dataclasses.replace(job, **fields)  # type: ignore[arg-type]


def test_schedule_needs_a_url() -> None:
    job = Job("job-1", "fc-1", JobStatus.FAILED, 1.0, 1.0)
    job.schedule_notification(now=5.0)
    assert (job.notify_status, job.notify_due_at) == (None, None)
    assert ended_job().notify_status is NotifyStatus.PENDING


def test_claim_takes_a_due_notification_once() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert job is not None and job.notify_attempts == 1 and job.notify_due_at == 140.0
    # The lease holds it: another notifier at the same moment finds nothing to claim.
    assert claim(dataclasses.replace(job), now=100.0, lease_seconds=40.0) is None
    # Once the lease ran out (its holder died), it can be claimed again.
    again = claim(dataclasses.replace(job), now=140.0, lease_seconds=40.0)
    assert again is not None and again.notify_attempts == 2


def test_claim_ignores_what_is_not_due() -> None:
    assert claim(ended_job(notify_due_at=200.0), now=100.0, lease_seconds=1) is None
    delivered = ended_job(notify_status=NotifyStatus.DELIVERED, notify_due_at=None)
    assert claim(delivered, now=100.0, lease_seconds=1) is None


def test_a_delivery_settles_it() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert job is not None
    done = settle(job, attempt=1, result=AttemptResult(delivered=True), policy=POLICY, now=101.0)
    assert done is not None
    assert (done.notify_status, done.notify_due_at, done.notified_at) == (
        NotifyStatus.DELIVERED,
        None,
        101.0,
    )


def test_failures_back_off_then_give_up() -> None:
    job = ended_job()
    due = []
    for attempt in (1, 2, 3):
        claimed = claim(job, now=job.notify_due_at or 0, lease_seconds=40.0)
        assert claimed is not None
        settled = settle(claimed, attempt=attempt, result=FAILED, policy=POLICY, now=1000.0)
        assert settled is not None
        job = settled
        due.append(job.notify_due_at)
    assert due[:2] == [1005.0, 1010.0]  # first_delay, then doubled
    assert job.notify_status is NotifyStatus.FAILED and due[2] is None
    assert job.notify_error == "HTTP 503" and job.notify_attempts == 3


def test_gone_stops_at_once() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert job is not None
    gone = AttemptResult(delivered=False, error="HTTP 410", permanent=True)
    settled = settle(job, attempt=1, result=gone, policy=POLICY, now=101.0)
    assert settled is not None and settled.notify_status is NotifyStatus.FAILED


def test_a_stale_attempt_does_not_reschedule_a_newer_one() -> None:
    job = claim(ended_job(), now=100.0, lease_seconds=40.0)
    assert job is not None
    job.notify_attempts = 2  # our lease ran out; another notifier claimed it since
    assert settle(job, attempt=1, result=FAILED, policy=POLICY, now=150.0) is None
    # ... but a late success still counts: the subscriber has it.
    done = settle(job, attempt=1, result=AttemptResult(delivered=True), policy=POLICY, now=150.0)
    assert done is not None and done.notify_status is NotifyStatus.DELIVERED


@pytest.mark.parametrize(
    ("failed", "retry_after", "expected"),
    [(1, None, 5.0), (3, None, 20.0), (10, None, 60.0), (1, 30.0, 30.0), (1, 9999.0, 60.0)],
)
def test_retry_delay(failed: int, retry_after: float | None, expected: float) -> None:
    assert POLICY.delay(failed, retry_after=retry_after, jitter=1.0) == expected


def test_redeliver_restarts_the_attempts() -> None:
    failed = ended_job(notify_status=NotifyStatus.FAILED, notify_attempts=3, notify_due_at=None)
    again = redeliver(failed, now=500.0)
    assert again is not None
    assert (again.notify_status, again.notify_attempts, again.notify_due_at) == (
        NotifyStatus.PENDING,
        0,
        500.0,
    )
    running = ended_job(status=JobStatus.RUNNING)
    assert redeliver(running, now=500.0) is None


def test_a_batch_is_notified_once_complete() -> None:
    batch = Batch(batch_id="b-1", total=2, created_at=1.0, notify_url="http://127.0.0.1:9/b")
    assert batch.count(None, JobStatus.SUCCEEDED, now=10.0) is False
    assert batch.notify_status is None and redeliver(batch, now=11.0) is None  # not complete
    assert batch.count(None, JobStatus.FAILED, now=20.0) is True
    assert (batch.notify_status, batch.notify_due_at) == (NotifyStatus.PENDING, 20.0)
    claimed = claim(batch, now=20.0, lease_seconds=40.0)
    assert claimed is not None and claimed.notify_attempts == 1
