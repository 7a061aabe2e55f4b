"""The JobStore contract: create-if-absent inbox, transactional apply, exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable

import pytest

from modalhub.storage.models import Batch, InboxEntry, Job, JobStatus, Notification, NotifyStatus
from modalhub.storage.protocols import (
    BatchExistsError,
    Decision,
    JobFilter,
    JobIdTakenError,
    JobStore,
)


def entry(event_id: str, call_id: str = "fc-1", type_: str = "function.progress") -> InboxEntry:
    body = json.dumps({"type": type_, "call_id": call_id}).encode()
    return InboxEntry(event_id, call_id, type_, body, signed_at=1, received_at=time.time())


def count_events(job: Job | None, e: InboxEntry) -> Decision:
    """A stand-in decision: one job per call, counting the entries applied to it."""
    if job is None:
        job = Job(
            job_id=f"job-{e.call_id}",
            call_id=e.call_id,
            status=JobStatus.PENDING,
            created_at=1.0,
            updated_at=1.0,
        )
    job.events_seen += 1
    job.status = JobStatus.RUNNING
    return Decision(job, "applied")


async def test_inbox_is_create_if_absent(job_store: JobStore) -> None:
    assert await job_store.put_inbox(entry("e1")) is True
    assert await job_store.put_inbox(entry("e1")) is False
    assert [e.event_id for e in await job_store.pending_inbox(limit=10)] == ["e1"]


async def test_concurrent_puts_of_one_id_create_once(job_store: JobStore) -> None:
    results = await asyncio.gather(*(job_store.put_inbox(entry("same")) for _ in range(50)))
    assert results.count(True) == 1
    assert (await job_store.inbox_backlog()).pending == 1


async def test_pending_is_oldest_first_and_limited(job_store: JobStore) -> None:
    for index in range(5):
        await job_store.put_inbox(entry(f"e{index}"))
    pending = await job_store.pending_inbox(limit=3)
    assert [e.event_id for e in pending] == ["e0", "e1", "e2"]


async def test_apply_marks_processed_and_writes_job(job_store: JobStore) -> None:
    entries = [entry("e1"), entry("e2"), entry("e3", call_id="fc-2")]
    for e in entries:
        await job_store.put_inbox(e)
    applied = await job_store.apply_inbox(entries, count_events)
    assert [a.outcome for a in applied] == ["applied"] * 3
    assert await job_store.pending_inbox(limit=10) == []
    job = await job_store.get_job_by_call("fc-1")
    assert job is not None and job.events_seen == 2
    assert (await job_store.get_job("job-fc-2")) is not None
    assert await job_store.get_job("job-nope") is None


async def test_apply_is_exactly_once_under_repeats_and_concurrency(job_store: JobStore) -> None:
    entries = [entry(f"e{index}") for index in range(20)]
    for e in entries:
        await job_store.put_inbox(e)
    # The same entries applied by several concurrent rounds (replicas, the sweeper) ...
    rounds = await asyncio.gather(*(job_store.apply_inbox(entries, count_events) for _ in range(4)))
    # ... and once more afterwards.
    rounds.append(await job_store.apply_inbox(entries, count_events))
    assert sum(len(r) for r in rounds) == 20
    job = await job_store.get_job_by_call("fc-1")
    assert job is not None and job.events_seen == 20


async def test_a_failing_decision_leaves_the_entry_pending(job_store: JobStore) -> None:
    await job_store.put_inbox(entry("ok"))
    await job_store.put_inbox(entry("bad", call_id="fc-bad"))

    def decide(job: Job | None, e: InboxEntry) -> Decision:
        if e.call_id == "fc-bad":
            raise RuntimeError("decision failed")
        return count_events(job, e)

    with pytest.raises(RuntimeError):
        await job_store.apply_inbox(await job_store.pending_inbox(limit=10), decide)
    # Nothing half-applied: the failing entry is still pending and has no job.
    assert "bad" in [e.event_id for e in await job_store.pending_inbox(limit=10)]
    assert await job_store.get_job_by_call("fc-bad") is None


async def test_new_job_id_taken_by_another_call_falls_back(job_store: JobStore) -> None:
    def named(job: Job | None, e: InboxEntry) -> Decision:
        job = job or Job(
            job_id="job-shared",
            call_id=e.call_id,
            status=JobStatus.RUNNING,
            created_at=1.0,
            updated_at=1.0,
        )
        return Decision(job, "applied")

    for e in (entry("a", call_id="fc-a"), entry("b", call_id="fc-b")):
        await job_store.put_inbox(e)
        await job_store.apply_inbox([e], named)
    first, second = await job_store.get_job_by_call("fc-a"), await job_store.get_job_by_call("fc-b")
    assert first is not None and first.job_id == "job-shared"
    assert second is not None and second.job_id == "job-fc-b"


async def test_ping(job_store: JobStore) -> None:
    await job_store.ping()


async def _seed_jobs(job_store: JobStore) -> None:
    """Six jobs over two apps and two batches, in three statuses, created in order."""
    layout = [
        ("a", "b1", JobStatus.RUNNING),
        ("a", "b1", JobStatus.SUCCEEDED),
        ("b", "b1", JobStatus.RUNNING),
        ("a", "b2", JobStatus.PENDING),
        ("b", "b2", JobStatus.RUNNING),
        ("a", None, JobStatus.FAILED),
    ]
    for index, (app, batch, status) in enumerate(layout):

        def make(
            job: Job | None,
            e: InboxEntry,
            *,
            i: int = index,
            a: str = app,
            b: str | None = batch,
            s: JobStatus = status,
        ) -> Decision:
            return Decision(
                Job(
                    job_id=f"job-{i}",
                    call_id=e.call_id,
                    status=s,
                    created_at=100.0 + i,
                    updated_at=100.0 + i,
                    app=a,
                    function="f",
                    batch_id=b,
                ),
                "applied",
            )

        e = entry(f"seed-{index}", call_id=f"fc-{index}")
        await job_store.put_inbox(e)
        await job_store.apply_inbox([e], make)


async def test_list_jobs_filters_and_orders(job_store: JobStore) -> None:
    await _seed_jobs(job_store)

    async def ids(**kwargs: object) -> list[str]:
        page = await job_store.list_jobs(JobFilter(**kwargs), limit=50)  # type: ignore[arg-type]
        assert page.next_cursor is None
        return [job.job_id for job in page.jobs]

    assert await ids() == [f"job-{i}" for i in range(6)]
    assert await ids(statuses=frozenset({JobStatus.RUNNING})) == ["job-0", "job-2", "job-4"]
    assert await ids(statuses=frozenset({JobStatus.RUNNING}), app="a") == ["job-0"]
    assert await ids(batch_id="b2") == ["job-3", "job-4"]
    assert await ids(app="b", function="f", batch_id="b2") == ["job-4"]
    assert await ids(app="nobody") == []


async def test_list_jobs_pages_with_a_cursor(job_store: JobStore) -> None:
    await _seed_jobs(job_store)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await job_store.list_jobs(JobFilter(), limit=4, cursor=cursor)
        seen += [job.job_id for job in page.jobs]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"job-{i}" for i in range(6)] and pages == 2
    with pytest.raises(ValueError):
        await job_store.list_jobs(JobFilter(), limit=4, cursor="not-a-cursor!")


def registered(job_id: str, call_id: str, **fields: object) -> Job:
    return Job(
        job_id=job_id,
        call_id=call_id,
        status=JobStatus.PENDING,
        created_at=1.0,
        updated_at=1.0,
        **fields,
    )  # type: ignore[arg-type]


async def test_register_job_then_callbacks_find_it(job_store: JobStore) -> None:
    job = registered("job-r1", "fc-r1", app="boltz2", function="predict", batch_id="b")
    assert (await job_store.register_job(job)).job_id == "job-r1"
    assert (await job_store.get_job_by_call("fc-r1")) == job
    e = entry("r1-start", call_id="fc-r1")
    await job_store.put_inbox(e)
    await job_store.apply_inbox([e], count_events)
    found = await job_store.get_job("job-r1")
    assert found is not None and found.events_seen == 1 and found.app == "boltz2"


async def test_register_after_a_callback_adopts_the_callbacks_job(job_store: JobStore) -> None:
    e = entry("early", call_id="fc-early")
    await job_store.put_inbox(e)
    await job_store.apply_inbox([e], count_events)  # creates job-fc-early
    adopted = await job_store.register_job(
        registered("job-new", "fc-early", app="imagekit", metadata={"owner": "ml"})
    )
    assert adopted.job_id == "job-fc-early" and adopted.events_seen == 1
    assert (adopted.app, adopted.metadata) == ("imagekit", {"owner": "ml"})
    assert await job_store.get_job("job-new") is None


async def test_register_refuses_a_job_id_of_another_call(job_store: JobStore) -> None:
    await job_store.register_job(registered("job-x", "fc-x1"))
    with pytest.raises(JobIdTakenError):
        await job_store.register_job(registered("job-x", "fc-x2"))
    assert await job_store.get_job_by_call("fc-x2") is None


def finish_as(status: JobStatus) -> Callable[[Job | None, InboxEntry], Decision]:
    def decide(job: Job | None, e: InboxEntry) -> Decision:
        assert job is not None
        job.status = status
        return Decision(job, "applied")

    return decide


async def test_batch_counts_move_with_their_jobs_and_complete_once(job_store: JobStore) -> None:
    await job_store.create_batch(Batch(batch_id="b-1", total=3, created_at=1.0))
    with pytest.raises(BatchExistsError):
        await job_store.create_batch(Batch(batch_id="b-1", total=9, created_at=2.0))
    for index in range(3):
        await job_store.register_job(registered(f"job-b{index}", f"fc-b{index}", batch_id="b-1"))
    await job_store.register_job(registered("job-lone", "fc-lone"))  # in no batch
    batch = await job_store.get_batch("b-1")
    assert batch is not None and batch.counts == {"pending": 3} and batch.completed_at is None

    completed: list[str | None] = []
    for index, status in enumerate((JobStatus.SUCCEEDED, JobStatus.FAILED)):
        e = entry(f"b-done-{index}", call_id=f"fc-b{index}")
        await job_store.put_inbox(e)
        completed += [
            a.completed_batch for a in await job_store.apply_inbox([e], finish_as(status))
        ]
    batch = await job_store.get_batch("b-1")
    assert batch is not None and batch.counts == {"pending": 1, "succeeded": 1, "failed": 1}
    assert completed == [None, None] and batch.completed_at is None

    # The last job: running first, then finished, in one call to apply_inbox.
    running, done = entry("b-run", call_id="fc-b2"), entry("b-end", call_id="fc-b2")
    for e in (running, done):
        await job_store.put_inbox(e)
    applied = await job_store.apply_inbox(
        [running, done],
        lambda job, e: finish_as(JobStatus.RUNNING if e is running else JobStatus.SUCCEEDED)(
            job, e
        ),
    )
    assert [a.completed_batch for a in applied] == [None, "b-1"]
    batch = await job_store.get_batch("b-1")
    assert batch is not None and batch.completed_at is not None
    assert batch.counts == {"succeeded": 2, "failed": 1}

    await job_store.set_batch_manifest("b-1", "gs://bucket/manifest.json")
    batch = await job_store.get_batch("b-1")
    assert batch is not None and batch.manifest_uri == "gs://bucket/manifest.json"
    assert await job_store.get_batch("b-nope") is None


def notify_due(due_at: float | None) -> Callable[[Job], Job | None]:
    def change(job: Job) -> Job | None:
        job.notification = Notification("http://127.0.0.1:9/hook")
        job.notification.status = NotifyStatus.PENDING
        job.notification.due_at = due_at
        return job

    return change


async def test_due_notifications_are_earliest_first(job_store: JobStore) -> None:
    for index, due_at in enumerate((30.0, 10.0, None, 20.0, 99.0)):
        await job_store.register_job(registered(f"job-n{index}", f"fc-n{index}"))
        if due_at is not None:
            await job_store.update_job(f"job-n{index}", notify_due(due_at))
    due = await job_store.due_notifications(now=50.0, limit=10)
    assert [job.job_id for job in due] == ["job-n1", "job-n3", "job-n0"]
    assert [j.job_id for j in await job_store.due_notifications(now=50.0, limit=1)] == ["job-n1"]
    # Settled (due_at cleared): no longer due.
    await job_store.update_job("job-n1", notify_due(None))
    assert [j.job_id for j in await job_store.due_notifications(now=15.0, limit=10)] == []


async def test_update_job_is_atomic_under_concurrency(job_store: JobStore) -> None:
    await job_store.register_job(registered("job-u", "fc-u"))
    await job_store.update_job("job-u", notify_due(10.0))

    def claim(job: Job) -> Job | None:
        if job.notification is None or (job.notification.due_at or 1e9) > 10.0:
            return None
        job.notification.attempts += 1
        job.notification.due_at = 100.0
        return job

    claims = await asyncio.gather(*(job_store.update_job("job-u", claim) for _ in range(5)))
    assert sum(job is not None for job in claims) == 1  # one claimant, however many tried
    stored = await job_store.get_job("job-u")
    assert stored is not None and stored.notification is not None
    assert (stored.notification.attempts, stored.notification.due_at) == (1, 100.0)
    assert stored.notification.status is NotifyStatus.PENDING
    assert await job_store.update_job("job-missing", claim) is None


async def test_update_job_may_not_move_status_or_batch(job_store: JobStore) -> None:
    await job_store.register_job(registered("job-s", "fc-s"))
    with pytest.raises(ValueError, match="status"):
        await job_store.update_job(
            "job-s", lambda job: dataclasses.replace(job, status=JobStatus.SUCCEEDED)
        )
    stored = await job_store.get_job("job-s")
    assert stored is not None and stored.status is JobStatus.PENDING


async def test_a_completing_batch_owes_its_notification(job_store: JobStore) -> None:
    batch = Batch("b-n", total=1, created_at=1.0, notification=Notification("http://x/b"))
    await job_store.create_batch(batch)
    await job_store.register_job(registered("job-bn", "fc-bn", batch_id="b-n"))
    await job_store.register_job(registered("job-jn", "fc-jn"))
    await job_store.update_job("job-jn", notify_due(1.0))  # due before the batch
    assert [j.job_id for j in await job_store.due_notifications(now=time.time(), limit=5)] == [
        "job-jn"
    ]
    e = entry("bn-done", call_id="fc-bn")
    await job_store.put_inbox(e)
    await job_store.apply_inbox([e], finish_as(JobStatus.SUCCEEDED))  # completes the batch
    due = await job_store.due_notifications(now=time.time() + 1, limit=5)
    assert [type(s).__name__ for s in due] == ["Job", "Batch"]  # earliest first
    stored = due[1]
    assert isinstance(stored, Batch) and stored.notification is not None
    assert stored.notification.status is NotifyStatus.PENDING
    assert [type(s).__name__ for s in await job_store.due_notifications(now=2.0, limit=5)] == [
        "Job"
    ]


async def test_update_batch_keeps_its_counts(job_store: JobStore) -> None:
    await job_store.create_batch(Batch(batch_id="b-u", total=2, created_at=1.0))

    def touch(batch: Batch) -> Batch:
        batch.metadata["seen"] = True
        return batch

    updated = await job_store.update_batch("b-u", touch)
    assert updated is not None and updated.metadata == {"seen": True}
    stored = await job_store.get_batch("b-u")
    assert stored is not None and stored.metadata == {"seen": True}

    def recount(batch: Batch) -> Batch:
        batch.counts["succeeded"] = 2  # in place: still caught
        return batch

    with pytest.raises(ValueError, match="counts"):
        await job_store.update_batch("b-u", recount)
    stored = await job_store.get_batch("b-u")
    assert stored is not None and stored.counts == {}
    assert await job_store.update_batch("b-missing", touch) is None


async def test_a_lease_has_one_holder_at_a_time(job_store: JobStore) -> None:
    take = job_store.acquire_lease
    assert await take("poller", "a", ttl_seconds=30, now=100.0) is True
    assert await take("poller", "b", ttl_seconds=30, now=110.0) is False  # a's runs
    assert await take("poller", "a", ttl_seconds=30, now=120.0) is True  # renewed: to 150
    assert await take("poller", "b", ttl_seconds=30, now=140.0) is False
    assert await take("other", "b", ttl_seconds=30, now=140.0) is True  # leases are separate
    assert await take("poller", "b", ttl_seconds=30, now=150.0) is True  # a's ran out
    assert await take("poller", "a", ttl_seconds=30, now=151.0) is False
    await job_store.release_lease("poller", "a")  # not a's to give up: no effect
    assert await take("poller", "a", ttl_seconds=30, now=152.0) is False
    await job_store.release_lease("poller", "b")
    assert await take("poller", "a", ttl_seconds=30, now=153.0) is True


async def test_concurrent_takers_of_a_free_lease_one_wins(job_store: JobStore) -> None:
    won = await asyncio.gather(
        *(job_store.acquire_lease("race", f"h{i}", ttl_seconds=30, now=1.0) for i in range(5))
    )
    assert won.count(True) == 1
