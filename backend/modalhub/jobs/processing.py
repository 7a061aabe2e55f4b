"""Apply stored inbox entries to their jobs, after the callback was acknowledged.

One loop per process: woken by the ingest endpoint after each new entry, and every
``sweep_interval`` seconds regardless, so entries left unprocessed by a crash (or by
another replica that died) are picked up at start-up and then periodically. Applying an
entry is transactional and skips entries already processed, so the loop is safe to run
in every replica at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import structlog
from pydantic import ValidationError

from modalhub import metrics
from modalhub.config import Settings
from modalhub.ingest.schemas import CallbackEvent, EventType
from modalhub.jobs.manifests import write_manifest
from modalhub.jobs.results import store_result
from modalhub.jobs.state import StoredResult, apply_event
from modalhub.storage.models import InboxEntry, Job
from modalhub.storage.protocols import (
    AppliedEntry,
    BlobStore,
    Decision,
    JobStore,
    StoreUnavailableError,
    derived_job_id,
)

log = structlog.get_logger(__name__)


async def process_entries(
    store: JobStore, blobs: BlobStore, entries: Sequence[InboxEntry]
) -> list[AppliedEntry]:
    events: dict[str, CallbackEvent | None] = {}
    for entry in entries:
        try:
            events[entry.event_id] = CallbackEvent.model_validate_json(entry.body)
        except ValidationError:  # validated at ingest; only a schema change could do this
            events[entry.event_id] = None

    # Results first, create-only, for jobs that can still take them: a crash after this
    # and before the transaction re-runs it harmlessly.
    successes = [
        (entry.event_id, event)
        for entry in entries
        if (event := events[entry.event_id]) is not None
        and event.type is EventType.SUCCESS
        and event.result is not None
    ]
    stored = await asyncio.gather(*(_store_result_if_open(store, blobs, e) for _, e in successes))
    results = {
        event_id: result
        for (event_id, _), result in zip(successes, stored, strict=True)
        if result is not None
    }

    now = time.time()

    def decide(job: Job | None, entry: InboxEntry) -> Decision:
        event = events.get(entry.event_id)
        if event is None:
            return Decision(job, "invalid: body no longer matches the event schema")
        return apply_event(
            job,
            event,
            signed_at=entry.signed_at,
            now=now,
            result=results.get(entry.event_id),
            source=entry.source,
        )

    applied = await store.apply_inbox(entries, decide)
    for item in applied:
        _record(item, now)
        if item.completed_batch is not None:
            await write_manifest(store, blobs, item.completed_batch)
    return applied


async def _store_result_if_open(
    store: JobStore, blobs: BlobStore, event: CallbackEvent
) -> StoredResult | None:
    job = await store.get_job_by_call(event.call_id)
    if job is not None and job.status.terminal:
        return None  # a late success: the job keeps what it has, no orphan blobs
    job_id = job.job_id if job else (event.metadata.job_id or derived_job_id(event.call_id))
    return await store_result(blobs, job_id=job_id, result=event.result)


def _record(item: AppliedEntry, now: float) -> None:
    applied = item.outcome == "applied"
    metrics.EVENTS_PROCESSED.labels(item.entry.type, "applied" if applied else "ignored").inc()
    metrics.PROCESSING_LAG_SECONDS.observe(max(0.0, now - item.entry.received_at))
    status = item.job.status if item.job else None
    finished = applied and status is not None and status.terminal
    # Finished jobs and ignored events at info (what an operator traces); the steady
    # stream of started/progress at debug, to keep the log affordable at high rates.
    log.log(
        logging.INFO if finished or not applied else logging.DEBUG,
        "job finished" if finished else "event processed",
        event_id=item.entry.event_id,
        call_id=item.entry.call_id,
        job_id=item.job.job_id if item.job else None,
        type=item.entry.type,
        outcome=item.outcome,
        status=status.value if status else None,
    )


class EventProcessor:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        *,
        batch_size: int,
        sweep_interval: float,
        gather_seconds: float = 0.02,
        on_notification_due: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.on_notification_due = on_notification_due
        self.blobs = blobs
        self.batch_size = batch_size
        self.sweep_interval = sweep_interval
        self.gather_seconds = gather_seconds
        self._wake = asyncio.Event()

    def notify(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Process pending entries until none are left; return how many were handled."""
        handled = 0
        while True:
            entries = await self.store.pending_inbox(limit=self.batch_size)
            if entries:
                applied = await process_entries(self.store, self.blobs, entries)
                handled += len(entries)
                if self.on_notification_due is not None and any(
                    (a.job is not None and a.job.notify_due_at is not None)
                    or a.completed_batch is not None  # its batch may have one
                    for a in applied
                ):
                    self.on_notification_due()
            if len(entries) < self.batch_size:
                return handled

    async def run_forever(self) -> None:
        delay = self.sweep_interval
        while True:
            self._wake.clear()
            try:
                await self.drain()
                delay = self.sweep_interval
            except StoreUnavailableError as exc:
                delay = min(self.sweep_interval, 1.0)
                metrics.PROCESSOR_ERRORS.inc()
                log.warning("processing paused: store unavailable", error=str(exc))
            except Exception:
                delay = self.sweep_interval
                metrics.PROCESSOR_ERRORS.inc()
                log.exception("processing round failed; will retry")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and shutdown would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                # Woken by a new entry: let a burst gather so it is applied in one batch
                # (one transaction, each job written once) rather than one round each.
                await asyncio.sleep(self.gather_seconds)


def build_processor(
    settings: Settings,
    store: JobStore,
    blobs: BlobStore,
    *,
    on_notification_due: Callable[[], None] | None = None,
) -> EventProcessor:
    return EventProcessor(
        store,
        blobs,
        batch_size=settings.process_batch_size,
        sweep_interval=settings.sweep_interval_seconds,
        gather_seconds=settings.process_gather_seconds,
        on_notification_due=on_notification_due,
    )
