"""What only the Firestore adapter has to get right: an unreachable backend, document ids,
bodies bigger than a document, replicas that contend, the TTL field, and the composite
indexes its queries need (the emulator runs any query, so those are checked here)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud.firestore_v1 import AsyncTransaction, async_transactional

from modalhub.storage.firestore import CHUNK_BYTES, FirestoreStore, document_id
from modalhub.storage.models import InboxEntry, Job, JobStatus
from modalhub.storage.protocols import Decision, JobFilter, StoreUnavailableError
from tests.emulators import PROJECT, FirestoreEmulator
from tests.storage.test_job_store_contract import count_events, entry


def make_store(prefix: str, *, timeout: float = 10.0) -> FirestoreStore:
    # Collections of their own per test (no wipe): the emulator refuses to wipe while a
    # transaction another test abandoned still holds a lock.
    return FirestoreStore(
        project=PROJECT, prefix=prefix, timeout_seconds=timeout, transaction_timeout_seconds=60
    )


@pytest.fixture
async def store(firestore_emulator: FirestoreEmulator) -> AsyncIterator[FirestoreStore]:
    fs = make_store(f"faults{uuid.uuid4().hex[:8]}_")
    await fs.open()
    try:
        yield fs
    finally:
        await fs.close()


async def test_stopped_backend_fails_fast_and_recovers_without_reopening(
    firestore_emulator: FirestoreEmulator,
) -> None:
    fs = make_store(f"outage{uuid.uuid4().hex[:8]}_")
    await fs.open()
    try:
        # The first write opens the channel (and a collection the emulator has not seen):
        # give it the default bound, then hold every call to 1 s.
        assert await fs.put_inbox(entry("before")) is True
        fs.timeout = 1.0
        firestore_emulator.stop()
        try:
            calls = {
                "put_inbox": lambda: fs.put_inbox(entry("during")),
                "ping": fs.ping,
                "pending_inbox": lambda: fs.pending_inbox(limit=10),
                "inbox_backlog": fs.inbox_backlog,
                "apply_inbox": lambda: fs.apply_inbox([entry("before")], count_events),
                "get_job_by_call": lambda: fs.get_job_by_call("fc-1"),
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(StoreUnavailableError) as caught:
                    await call()
                elapsed = time.monotonic() - started
                assert elapsed < 3.0, f"{name} took {elapsed:.1f} s"  # 1 s + grace
                assert len(str(caught.value)) < 400, str(caught.value)
        finally:
            firestore_emulator.start()
        # The same store (and gRPC channel) works again once the backend is back (gRPC
        # reconnects with backoff). An attempt that timed out may still have landed: the
        # retry then finds the entry stored (False), as a sender's retry would.
        deadline = time.monotonic() + 30
        while True:
            try:
                await fs.put_inbox(entry("after"))
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert await fs.put_inbox(entry("after")) is False
        assert "after" in [e.event_id for e in await fs.pending_inbox(limit=10)]
        await fs.ping()
    finally:
        await fs.close()


async def test_ids_firestore_cannot_use_as_document_ids(store: FirestoreStore) -> None:
    odd = ["a/b", "..", "__reserved__", "x" * 2000, "ünïcode id", "~" + "0" * 64]
    assert len({document_id(value) for value in odd}) == len(odd)
    assert document_id("fc-01JABC") == "fc-01JABC"  # safe ids stay readable

    def named(job: Job | None, e: InboxEntry) -> Decision:
        job = job or Job(
            job_id=f"job/{e.call_id}",
            call_id=e.call_id,
            status=JobStatus.RUNNING,
            created_at=1.0,
            updated_at=1.0,
        )
        return Decision(job, "applied")

    entries = [entry(f"evt/{index}", call_id=call) for index, call in enumerate(odd)]
    for e in entries:
        assert await store.put_inbox(e) is True
        assert await store.put_inbox(e) is False
    assert {e.event_id for e in await store.pending_inbox(limit=10)} == {
        e.event_id for e in entries
    }
    assert len(await store.apply_inbox(entries, named)) == len(entries)
    for call in odd:
        job = await store.get_job_by_call(call)
        assert job is not None and job.job_id == f"job/{call}" and job.call_id == call
        assert await store.get_job(f"job/{call}") == job


async def test_a_body_bigger_than_a_document_round_trips(store: FirestoreStore) -> None:
    payload = {"type": "function.success", "call_id": "fc-big", "blob": "x" * (2 * CHUNK_BYTES)}
    body = json.dumps(payload).encode()
    big = InboxEntry(
        "big", "fc-big", "function.success", body, signed_at=1, received_at=time.time()
    )
    assert await store.put_inbox(big) is True
    assert await store.put_inbox(big) is False
    (pending,) = await store.pending_inbox(limit=10)
    assert pending.body == body


async def test_a_duplicate_arriving_while_its_entry_is_applied(store: FirestoreStore) -> None:
    """A create on a document a transaction holds is aborted (the emulator after ~2 s):
    that is still a duplicate, not an outage."""
    e = entry("busy")
    await store.put_inbox(e)
    client = store._db
    ref = client.collection(store.inbox_collection).document("busy")
    holding, release = asyncio.Event(), asyncio.Event()

    @async_transactional
    async def hold(transaction: AsyncTransaction) -> None:
        async for _ in client.get_all([ref], transaction=transaction):
            pass
        holding.set()
        await release.wait()

    holder = asyncio.create_task(hold(client.transaction()))
    try:
        await asyncio.wait_for(holding.wait(), timeout=10)
        assert await store.put_inbox(e) is False
    finally:
        release.set()
        await holder


async def test_replicas_apply_each_entry_once(firestore_emulator: FirestoreEmulator) -> None:
    """Two stores (two clients, as two replicas) contend for the same entries. Small:
    the emulator takes seconds per contended transaction."""
    prefix = f"replicas{uuid.uuid4().hex[:8]}_"
    replicas = [make_store(prefix), make_store(prefix)]
    for replica in replicas:
        await replica.open()
    try:
        entries = [entry(f"r{index}") for index in range(3)]
        for e in entries:
            await replicas[0].put_inbox(e)
        rounds = await asyncio.gather(*(r.apply_inbox(entries, count_events) for r in replicas))
        assert sum(len(r) for r in rounds) == 3
        job = await replicas[1].get_job_by_call("fc-1")
        assert job is not None and job.events_seen == 3
    finally:
        for replica in replicas:
            await replica.close()


async def test_expire_at_for_the_ttl_policy(store: FirestoreStore) -> None:
    client = store._db
    e = entry("ttl")
    await store.put_inbox(e)
    inbox = (await client.collection(store.inbox_collection).document("ttl").get()).to_dict()
    assert inbox is not None
    assert abs(inbox["expire_at"].timestamp() - (e.received_at + 7 * 86400)) < 1

    await store.apply_inbox([e], count_events)  # running: kept until it finishes
    jobs = client.collection(store.jobs_collection)
    assert (await jobs.document("job-fc-1").get()).get("expire_at") is None

    def finish(job: Job | None, _: InboxEntry) -> Decision:
        assert job is not None
        job.status, job.finished_at = JobStatus.SUCCEEDED, 1000.0
        return Decision(job, "applied")

    done = entry("done", type_="function.success")
    await store.put_inbox(done)
    await store.apply_inbox([done], finish)
    expire_at = (await jobs.document("job-fc-1").get()).get("expire_at")
    assert expire_at.timestamp() == pytest.approx(1000.0 + 30 * 86400)
    call = (await client.collection(store.calls_collection).document("fc-1").get()).to_dict()
    assert call is not None and call["expire_at"] == expire_at


INDEXES = Path(__file__).resolve().parents[2] / "firestore.indexes.json"


def _needs(query: Any) -> tuple[str, frozenset[str], list[str]]:
    """The collection, equality (and ``in``) fields and sort fields of a query."""
    pb = query._to_protobuf()
    filters = []
    if "composite_filter" in pb.where:
        filters = [f.field_filter for f in pb.where.composite_filter.filters]
    elif "field_filter" in pb.where:
        filters = [pb.where.field_filter]
    ranges = [f for f in filters if f.op.name not in {"EQUAL", "IN"}]
    # A range filter is only ever on the first sort field (Firestore requires that).
    assert len(ranges) <= 1 and all(f.op.name == "LESS_THAN_OR_EQUAL" for f in ranges)
    assert all(r.field.field_path == pb.order_by[0].field.field_path for r in ranges)
    assert all(o.direction.name == "ASCENDING" for o in pb.order_by)
    return (
        pb.from_[0].collection_id,
        frozenset(f.field.field_path for f in filters if f not in ranges),
        [o.field.field_path for o in pb.order_by],
    )


def _covered(collection: str, equality: frozenset[str], order: list[str]) -> bool:
    if not order or (len(equality) + len(order) < 2):
        return True  # served by Firestore's automatic single-field indexes
    for index in json.loads(INDEXES.read_text())["indexes"]:
        fields = [f["fieldPath"] for f in index["fields"]]
        if index["collectionGroup"] != collection or index["queryScope"] != "COLLECTION":
            continue
        if any(f.get("order") != "ASCENDING" for f in index["fields"]):
            continue
        head, tail = fields[: len(equality)], fields[len(equality) :]
        if set(head) == equality and tail == order:
            return True
    return False


async def test_the_indexes_file_covers_every_query(firestore_emulator: FirestoreEmulator) -> None:
    fs = FirestoreStore(project=PROJECT)  # the default prefix, as in the file
    await fs.open()
    try:
        queries = [fs._pending_query(10)]
        for collection in (fs.jobs_collection, fs.batches_collection):
            queries.append(fs._due_notifications_query(collection, 1.0, 10))
        for statuses in (None, frozenset({JobStatus.RUNNING}), frozenset(JobStatus)):
            for app, function, batch in itertools.product(("a", None), ("f", None), ("b", None)):
                job_filter = JobFilter(
                    statuses=statuses, app=app, function=function, batch_id=batch
                )
                for after in (None, (1.0, "job-1")):
                    queries.append(fs._jobs_query(job_filter, after=after, limit=10))
        for query in queries:
            assert _covered(*_needs(query)), _needs(query)
    finally:
        await fs.close()
