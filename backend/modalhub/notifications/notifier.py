"""The loop that sends due notifications, beside the event processor (same process).

Each round reads the due jobs, claims each in its own store transaction (so any number
of notifiers may run), sends the claimed ones concurrently and settles each. It runs
every ``poll_seconds`` and whenever the processor finishes a job that has a notify_url.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx
import structlog

from modalhub import metrics
from modalhub.config import Settings
from modalhub.notifications import outbox
from modalhub.notifications.delivery import deliver
from modalhub.storage.models import Job, NotifyStatus
from modalhub.storage.protocols import JobStore, StoreUnavailableError

log = structlog.get_logger(__name__)

# A claim outlives the attempt's own timeout by this much before another notifier may
# take the notification over.
LEASE_MARGIN_SECONDS = 30.0


class Notifier:
    def __init__(
        self,
        store: JobStore,
        *,
        keys: Sequence[bytes],
        policy: outbox.RetryPolicy,
        timeout: float,
        poll_seconds: float,
        concurrency: int,
    ) -> None:
        self.store = store
        self.keys = list(keys)
        self.policy = policy
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        self._wake.set()

    async def send_due(self) -> int:
        """Claim and attempt the notifications due now; return how many were attempted."""
        now = time.time()
        due = await self.store.due_notifications(now=now, limit=self.concurrency)
        if not due:
            return 0
        claim = functools.partial(
            outbox.claim, now=now, lease_seconds=self.timeout + LEASE_MARGIN_SECONDS
        )
        claimed = [
            job
            for job in await asyncio.gather(*(self.store.update_job(j.job_id, claim) for j in due))
            if job is not None
        ]
        client = self._client or self._new_client()
        try:
            await asyncio.gather(*(self._attempt(client, job) for job in claimed))
        finally:
            if client is not self._client:
                await client.aclose()
        return len(claimed)

    async def _attempt(self, client: httpx.AsyncClient, job: Job) -> None:
        if not self.keys:  # the API refuses notify_url without a secret; an old job may have one
            result = outbox.AttemptResult(
                delivered=False, error="no MODALHUB_NOTIFY_SECRET to sign with"
            )
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    result = await deliver(client, job, self.keys)
            except TimeoutError:
                result = outbox.AttemptResult(
                    delivered=False, error=f"no answer within {self.timeout:g} s"
                )
        settle = functools.partial(
            outbox.settle,
            attempt=job.notify_attempts,
            result=result,
            policy=self.policy,
            now=time.time(),
            jitter=random.uniform(0.8, 1.2),
        )
        settled = await self.store.update_job(job.job_id, settle)
        if settled is None:
            outcome = "superseded"  # another notifier's attempt settled it
        elif settled.notify_status is NotifyStatus.PENDING:
            outcome = "retrying"
        else:
            outcome = str(settled.notify_status)
        metrics.NOTIFICATIONS.labels(outcome).inc()
        due = settled.notify_due_at if settled is not None else None
        log.log(
            logging.INFO if result.delivered else logging.WARNING,
            f"notification {outcome}",
            job_id=job.job_id,
            host=urlsplit(job.notify_url or "").netloc,  # not the URL: it may hold a token
            attempt=job.notify_attempts,
            error=result.error,
            next_attempt_in=round(due - time.time(), 1) if due is not None else None,
        )

    def _new_client(self) -> httpx.AsyncClient:
        # Redirects are not followed: a notify_url that moved fails visibly on the job.
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    async def run_forever(self) -> None:
        async with self._new_client() as client:
            self._client = client
            try:
                await self._loop()
            finally:
                self._client = None

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            attempted = 0
            try:
                attempted = await self.send_due()
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


def build_notifier(settings: Settings, store: JobStore) -> Notifier:
    return Notifier(
        store,
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
