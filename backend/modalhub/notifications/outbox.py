"""The notification outbox kept on each job and batch: pure steps the notifier runs in
the store.

A job or batch that ends with a ``notify_url`` is marked pending in the same transaction
that ends it (``Notifiable.schedule_notification``). A notifier then *claims* it: one store
transaction counts the attempt and pushes ``notify_due_at`` past the attempt's deadline,
so replicas do not send it at the same time, and a notifier that dies mid-attempt leaves
it to be claimed again once that lease runs out. After the attempt it *settles* it:
delivered, due again later, or failed for good. Delivery is therefore at least once;
every attempt carries the same ``webhook-id`` so a receiver can drop repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from modalhub.storage.models import Notifiable, NotifyStatus

N = TypeVar("N", bound=Notifiable)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    first_delay: float  # seconds before the second attempt; doubles after each failure
    max_delay: float

    def delay(self, failed_attempts: int, *, retry_after: float | None, jitter: float) -> float:
        """Seconds before the next attempt; ``jitter`` is a factor near 1 (spreads load)."""
        base = min(self.first_delay * 2.0 ** max(failed_attempts - 1, 0), self.max_delay)
        delay = base * jitter
        if retry_after is not None:  # the receiver said when; within our own ceiling
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


@dataclass(frozen=True, slots=True)
class AttemptResult:
    delivered: bool
    error: str | None = None  # why not, for the operator (shown on the job)
    retry_after: float | None = None
    permanent: bool = False  # the receiver asked us to stop (410 Gone)


def claim(record: N, *, now: float, lease_seconds: float) -> N | None:
    """The record with one more attempt under way, or None if it is not due (any more)."""
    owed = record.notification
    if owed is None or owed.status is not NotifyStatus.PENDING:
        return None
    if owed.due_at is None or owed.due_at > now:
        return None
    owed.attempts += 1
    owed.due_at = now + lease_seconds
    return record


def settle(
    record: N,
    *,
    attempt: int,
    result: AttemptResult,
    policy: RetryPolicy,
    now: float,
    jitter: float = 1.0,
) -> N | None:
    """Record the outcome of attempt number ``attempt``; None: nothing to record."""
    owed = record.notification
    if owed is None or owed.status is not NotifyStatus.PENDING:
        return None  # settled meanwhile (another notifier's attempt got through)
    if result.delivered:
        owed.status = NotifyStatus.DELIVERED
        owed.due_at = None
        owed.error = None
        owed.delivered_at = now
        return record
    if owed.attempts != attempt:
        return None  # our lease ran out and another attempt started: it decides
    owed.error = result.error
    if result.permanent or attempt >= policy.max_attempts:
        owed.status = NotifyStatus.FAILED
        owed.due_at = None
    else:
        owed.due_at = now + policy.delay(attempt, retry_after=result.retry_after, jitter=jitter)
    return record


def redeliver(record: N, *, now: float) -> N | None:
    """Send an ended job's (or batch's) notification again, with a fresh set of attempts."""
    if record.notification is None or not record.ended:
        return None
    record.notification.schedule(now=now)
    return record
