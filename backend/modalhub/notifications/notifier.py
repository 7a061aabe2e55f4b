"""The loop that sends due notifications, beside the event processor (same process).

Each round reads the due jobs and batches, claims each in its own store transaction (so any number
of notifiers may run), sends the claimed ones concurrently and settles each. It runs
every ``poll_seconds`` and whenever the processor ends a job (or batch) that has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from modalhub import metrics
from modalhub.config import Settings
from modalhub.jobs.manifests import write_manifest
from modalhub.notifications import outbox
from modalhub.notifications.delivery import deliver, notification_id
from modalhub.storage.models import Batch, Job, NotifyStatus
from modalhub.storage.protocols import BlobStore, JobStore, StoreUnavailableError

log = structlog.get_logger(__name__)

# A claim outlives the attempt's own timeout by this much before another notifier may
# take the notification over.
LEASE_MARGIN_SECONDS = 30.0


class Notifier:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore | None = None,
        *,
        keys: Sequence[bytes],
        policy: outbox.RetryPolicy,
        timeout: float,
        poll_seconds: float,
        concurrency: int,
    ) -> None:
        self.store = store
        self.blobs = blobs  # for batch manifests
        self.keys = list(keys)
        self.policy = policy
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def send_due(self, client: httpx.AsyncClient) -> int:
        """Claim and attempt the notifications due now; return how many were attempted."""
        now = time.time()
        due = await self.store.due_notifications(now=now, limit=self.concurrency)
        if not due:
            return 0
        lease = self.timeout + LEASE_MARGIN_SECONDS
        claimed = [
            subject
            for subject in await asyncio.gather(
                *(self._update(s, outbox.claim, now=now, lease_seconds=lease) for s in due)
            )
            if subject is not None
        ]
        await asyncio.gather(*(self._attempt(client, subject) for subject in claimed))
        return len(claimed)

    async def _update(
        self, subject: Job | Batch, step: Callable[..., Any], **arguments: Any
    ) -> Job | Batch | None:
        """Run an outbox step on the stored record, in one store transaction."""
        if isinstance(subject, Job):
            return await self.store.update_job(subject.job_id, functools.partial(step, **arguments))
        return await self.store.update_batch(subject.batch_id, functools.partial(step, **arguments))

    async def _attempt(self, client: httpx.AsyncClient, subject: Job | Batch) -> None:
        claimed = subject.notification
        assert claimed is not None  # claim() returns only records that have one
        result = await self._deliver(client, subject)
        settled = await self._update(
            subject,
            outbox.settle,
            attempt=claimed.attempts,
            result=result,
            policy=self.policy,
            now=time.time(),
            jitter=random.uniform(0.8, 1.2),
        )
        owed = settled.notification if settled is not None else None
        if owed is None:
            outcome = "superseded"  # another notifier's attempt settled it
        elif owed.status is NotifyStatus.PENDING:
            outcome = "retrying"
        else:
            outcome = str(owed.status)
        metrics.NOTIFICATIONS.labels(outcome).inc()
        due = owed.due_at if owed is not None else None
        log.log(
            logging.INFO if result.delivered else logging.WARNING,
            f"notification {outcome}",
            notification=notification_id(subject),
            # Not the URL: it may hold a token.
            host=urlsplit(claimed.url).netloc,
            attempt=claimed.attempts,
            error=result.error,
            next_attempt_in=round(due - time.time(), 1) if due is not None else None,
        )

    async def _deliver(
        self, client: httpx.AsyncClient, subject: Job | Batch
    ) -> outbox.AttemptResult:
        if not self.keys:  # the API refuses notify_url without a secret; an old record may have one
            return outbox.AttemptResult(
                delivered=False, error="no MODALHUB_NOTIFY_SECRET to sign with"
            )
        if isinstance(subject, Batch) and subject.manifest_uri is None and self.blobs:
            # Its manifest is written after the transaction that completed it; make sure
            # (create-only, so harmless if the processor is writing it too).
            subject.manifest_uri = await write_manifest(self.store, self.blobs, subject.batch_id)
        try:
            async with asyncio.timeout(self.timeout):
                return await deliver(client, subject, self.keys)
        except TimeoutError:
            return outbox.AttemptResult(
                delivered=False, error=f"no answer within {self.timeout:g} s"
            )

    async def run_forever(self) -> None:
        # Redirects are not followed: a notify_url that moved fails visibly on the job.
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            await self._loop(client)

    async def _loop(self, client: httpx.AsyncClient) -> None:
        while True:
            self._wake.clear()
            attempted = 0
            try:
                attempted = await self.send_due(client)
            except StoreUnavailableError as exc:
                log.warning("notifications paused: store unavailable", error=str(exc))
            except Exception:
                log.exception("notification round failed; will retry")
            if attempted >= self.concurrency:
                continue  # more may be due: no pause
            # asyncio.timeout, not wait_for: see processing.py.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()


def build_notifier(settings: Settings, store: JobStore, blobs: BlobStore) -> Notifier:
    return Notifier(
        store,
        blobs,
        keys=settings.notify_keys,
        policy=outbox.RetryPolicy(
            max_attempts=settings.notify_max_attempts,
            first_delay=settings.notify_retry_seconds,
            max_delay=settings.notify_retry_max_seconds,
        ),
        timeout=settings.notify_timeout_seconds,
        poll_seconds=settings.notify_poll_seconds,
        concurrency=settings.notify_concurrency,
    )
