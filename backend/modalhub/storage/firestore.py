"""The production job store: Google Cloud Firestore (native mode), through the async client.

Collections (names start with the configured prefix, ``modalhub_`` by default):

- ``{prefix}inbox``: one document per callback, keyed by its event id. Created with
  ``create()`` (fails if it exists), so storing is create-if-absent. A body too large for
  one document (1 MiB) is split over content-addressed documents in
  ``{prefix}inbox_chunks``, written before the inbox document, which is the commit point.
- ``{prefix}jobs``: one document per job, keyed by its job id. The whole job is kept as
  JSON in ``doc`` (Firestore maps reject nested arrays, some keys and big integers, which
  a callback's metadata may hold); the fields that listings filter and sort on are
  copied beside it.
- ``{prefix}calls``: call id -> job id, so a transaction reads the job of a call as
  documents (lockable, consistent) rather than through a query.
- ``{prefix}leases``: one document per background loop that runs once across replicas
  (the poller): its holder and when the lease expires.

Document ids cannot hold ``/`` and have other limits: ids that are safe are kept as
they are (readable in the console), any other id becomes ``~`` + its SHA-256 (``~`` never
appears in a kept id, so the two forms cannot collide). The original id is a field.

Every call is bounded by ``timeout`` seconds and every backend failure surfaces as
``StoreUnavailableError``. See docs/firestore.md for TTL policies and indexes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import AsyncRetry, if_exception_type
from google.auth.exceptions import GoogleAuthError
from google.cloud.firestore_v1 import (
    AsyncClient,
    AsyncDocumentReference,
    AsyncQuery,
    AsyncTransaction,
    DocumentSnapshot,
    FieldFilter,
    async_transactional,
)
from google.cloud.firestore_v1.async_aggregation import AsyncAggregationQuery

from modalhub.storage.models import (
    Batch,
    InboxEntry,
    Job,
    JobStatus,
    batch_from_dict,
    batch_to_dict,
    job_from_dict,
    job_to_dict,
)
from modalhub.storage.protocols import (
    AppliedEntry,
    BatchChangeFn,
    BatchExistsError,
    ChangeFn,
    DecideFn,
    InboxBacklog,
    JobFilter,
    JobIdTakenError,
    JobPage,
    R,
    StoreUnavailableError,
    apply_change,
    decode_cursor,
    derived_job_id,
    encode_cursor,
    merge_registration,
)

if TYPE_CHECKING:
    from modalhub.config import Settings

T = TypeVar("T")
_Snapshot = DocumentSnapshot[AsyncDocumentReference]

# A document holds at most 1 MiB; the rest of an inbox document is small.
INLINE_BODY_BYTES = 900_000
CHUNK_BYTES = 900_000
# Calls whose entries one apply_inbox runs at once (entries of one call run in order).
MAX_CONCURRENT_CALLS = 16
# Extra time for the client's own deadline to fire before ours does.
_GRACE_SECONDS = 0.5

_SAFE_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,256}")
_RESERVED_ID = re.compile(r"__.*__")  # Firestore reserves these ids

# Failures of the backend or of the way to it: the caller may retry later.
_BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    api_exceptions.GoogleAPIError,  # GoogleAPICallError (every gRPC status) and RetryError
    GoogleAuthError,
    grpc.RpcError,
    OSError,  # includes ConnectionRefusedError and TimeoutError (= asyncio.TimeoutError)
)
_TRANSIENT = if_exception_type(
    api_exceptions.ServiceUnavailable,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
)


def document_id(value: str) -> str:
    """A Firestore document id for ``value``: deterministic and collision-free."""
    if _SAFE_ID.fullmatch(value) and value not in {".", ".."} and not _RESERVED_ID.fullmatch(value):
        return value
    return "~" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class _PassThroughError(Exception):
    """Carries an exception raised by ``decide`` (or by our own checks) out of the
    transaction machinery, so it reaches the caller as it was raised."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _ContentionError(Exception):
    """The transaction was aborted by a concurrent one: run it again."""


class FirestoreStore:
    def __init__(
        self,
        *,
        project: str,
        database: str = "(default)",
        prefix: str = "modalhub_",
        inbox_retention_days: float = 7,
        job_retention_days: float = 30,
        timeout_seconds: float = 5.0,
        transaction_timeout_seconds: float | None = None,
    ) -> None:
        """``timeout_seconds`` bounds each call, and each attempt of an inbox entry's
        transaction; an attempt aborted by a concurrent transaction is run again until
        ``transaction_timeout_seconds`` (default: the same) have passed."""
        self.project = project
        self.database = database
        self.prefix = prefix
        self.inbox_retention = timedelta(days=inbox_retention_days)
        self.job_retention = timedelta(days=job_retention_days)
        self.timeout = timeout_seconds
        self.transaction_timeout = transaction_timeout_seconds or timeout_seconds
        self.inbox_collection = f"{prefix}inbox"
        self.chunks_collection = f"{prefix}inbox_chunks"
        self.jobs_collection = f"{prefix}jobs"
        self.calls_collection = f"{prefix}calls"
        self.batches_collection = f"{prefix}batches"
        self.leases_collection = f"{prefix}leases"
        self._client: AsyncClient | None = None
        self._abandoned: set[asyncio.Task[Any]] = set()  # calls that timed out
        self._call_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FirestoreStore:
        if not settings.gcp_project:
            raise ValueError("the Firestore store needs MODALHUB_GCP_PROJECT")
        return cls(
            project=settings.gcp_project,
            database=settings.firestore_database,
            prefix=settings.firestore_prefix,
            inbox_retention_days=settings.inbox_retention_days,
            job_retention_days=settings.job_retention_days,
            timeout_seconds=settings.backend_timeout_seconds,
        )

    # --- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        try:
            self._client = self._connect()
        except _BACKEND_ERRORS as exc:
            raise StoreUnavailableError(
                f"firestore: cannot create a client: {_describe(exc)}"
            ) from exc

    async def close(self) -> None:
        for task in list(self._abandoned):
            task.cancel()
        if self._abandoned:
            await asyncio.wait(set(self._abandoned), timeout=self.timeout)
        client, self._client = self._client, None
        if client is not None and client._firestore_api_internal is not None:
            await client._transport.close()  # AsyncClient has no close()

    def _connect(self) -> AsyncClient:
        # Credentials come from the environment (Workload Identity, a key file named by
        # GOOGLE_APPLICATION_CREDENTIALS); FIRESTORE_EMULATOR_HOST selects the emulator.
        # The gRPC channel opens on the first call, and reconnects by itself after an
        # outage (with gRPC's backoff: after a long one, up to two minutes later).
        return AsyncClient(project=self.project, database=self.database)

    async def ping(self) -> None:
        # A missing document: one cheap read (the id cannot be one document_id makes).
        ref = self._db.collection(self.calls_collection).document("~ping")
        await self._bounded("ping", lambda: ref.get(retry=self._retry(), timeout=self.timeout))

    # --- inbox ------------------------------------------------------------------
    async def put_inbox(self, entry: InboxEntry) -> bool:
        db = self._db
        ref = db.collection(self.inbox_collection).document(document_id(entry.event_id))
        expire_at = _timestamp(entry.received_at) + self.inbox_retention
        data: dict[str, Any] = {
            "event_id": entry.event_id,
            "call_id": entry.call_id,
            "type": entry.type,
            "body": entry.body,
            "body_chunks": 0,
            "body_sha256": None,
            "body_size": len(entry.body),
            "signed_at": entry.signed_at,
            "received_at": float(entry.received_at),
            "source": entry.source,
            "processed": False,
            "processed_at": None,
            "outcome": None,
            "expire_at": expire_at,
        }
        chunks: list[tuple[AsyncDocumentReference, dict[str, Any]]] = []
        if len(entry.body) > INLINE_BODY_BYTES:
            digest = hashlib.sha256(entry.body).hexdigest()
            count = math.ceil(len(entry.body) / CHUNK_BYTES)
            data.update(body=None, body_chunks=count, body_sha256=digest)
            collection = db.collection(self.chunks_collection)
            for index in range(count):
                piece = entry.body[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
                chunks.append(
                    (
                        collection.document(f"{digest}-{index:04d}"),
                        {"data": piece, "expire_at": expire_at},
                    )
                )

        async def put() -> bool:
            # Chunks are named by the body's hash: rewriting them (a duplicate, a
            # concurrent put of the same event) writes the same bytes.
            await asyncio.gather(
                *(
                    chunk.set(value, retry=self._retry(), timeout=self.timeout)
                    for chunk, value in chunks
                )
            )
            while True:
                try:
                    await ref.create(data, retry=self._retry(), timeout=self.timeout)
                    return True
                except api_exceptions.AlreadyExists:
                    return False
                except api_exceptions.Aborted:
                    # A transaction holds the document: it exists and is being applied
                    # (this is a duplicate delivery). Reads outside transactions take no
                    # locks, so ask that way; if it is not there after all, try again.
                    snapshot = await ref.get(retry=self._retry(), timeout=self.timeout)
                    if snapshot.exists:
                        return False
                    await asyncio.sleep(0.05)

        budget = self.timeout * (2 if chunks else 1)
        return await self._bounded("put_inbox", put, budget=budget)

    async def pending_inbox(self, *, limit: int) -> list[InboxEntry]:
        if limit <= 0:
            return []
        query = self._pending_query(limit)

        async def read() -> list[InboxEntry]:
            snapshots = await query.get(retry=self._retry(), timeout=self.timeout)
            return [await self._inbox_entry(snapshot) for snapshot in snapshots]

        return await self._bounded("pending_inbox", read)

    async def inbox_backlog(self) -> InboxBacklog:
        pending = self._db.collection(self.inbox_collection).where(
            filter=FieldFilter("processed", "==", False)
        )
        counting = AsyncAggregationQuery(pending).count(alias="pending")

        async def read() -> InboxBacklog:
            counted, oldest = await asyncio.gather(
                counting.get(retry=self._retry(), timeout=self.timeout),
                pending.order_by("received_at")
                .limit(1)
                .select(["received_at"])
                .get(retry=self._retry(), timeout=self.timeout),
            )
            count = int(counted[0][0].value) if counted and counted[0] else 0
            first = oldest[0].to_dict() if oldest else None
            received = float(first["received_at"]) if first else None
            return InboxBacklog(pending=count, oldest_received_at=received)

        return await self._bounded("inbox_backlog", read)

    async def _inbox_entry(self, snapshot: _Snapshot) -> InboxEntry:
        data = snapshot.to_dict() or {}
        body = data.get("body")
        if body is None and data.get("body_chunks"):
            body = await self._read_chunks(data["body_sha256"], int(data["body_chunks"]))
        processed_at = data.get("processed_at")
        return InboxEntry(
            event_id=data["event_id"],
            call_id=data["call_id"],
            type=data["type"],
            body=bytes(body or b""),
            signed_at=int(data["signed_at"]),
            received_at=float(data["received_at"]),
            processed_at=float(processed_at) if processed_at is not None else None,
            outcome=data.get("outcome"),
            source=data.get("source") or "webhook",
        )

    async def _read_chunks(self, digest: str, count: int) -> bytes:
        collection = self._db.collection(self.chunks_collection)
        refs = [collection.document(f"{digest}-{index:04d}") for index in range(count)]
        pieces: dict[str, bytes] = {}
        async for snapshot in self._db.get_all(refs, retry=self._retry(), timeout=self.timeout):
            if snapshot.exists:
                pieces[snapshot.reference.path] = bytes((snapshot.to_dict() or {})["data"])
        body = b"".join(pieces.get(ref.path, b"") for ref in refs)
        if hashlib.sha256(body).hexdigest() != digest:
            # Chunks gone (TTL) or incomplete: processing sees an empty body and records
            # the entry as invalid instead of stalling the queue behind it.
            return b""
        return body

    # --- applying entries ----------------------------------------------------------
    async def apply_inbox(
        self, entries: Sequence[InboxEntry], decide: DecideFn
    ) -> list[AppliedEntry]:
        """One transaction per entry. Entries of one call run in order (each transaction
        reads the job the previous one wrote); different calls run concurrently."""
        by_call: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            by_call.setdefault(entry.call_id, []).append(index)
        results: list[AppliedEntry | None] = [None] * len(entries)
        limiter = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

        async def apply_call(indices: list[int]) -> None:
            async with limiter:
                for index in indices:
                    results[index] = await self._apply_entry(entries[index], decide)

        outcomes = await asyncio.gather(
            *(apply_call(indices) for indices in by_call.values()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [result for result in results if result is not None]

    async def _apply_entry(self, entry: InboxEntry, decide: DecideFn) -> AppliedEntry | None:
        db = self._db
        inbox_ref = db.collection(self.inbox_collection).document(document_id(entry.event_id))
        call_ref = db.collection(self.calls_collection).document(document_id(entry.call_id))
        jobs = db.collection(self.jobs_collection)

        @async_transactional
        async def run(transaction: AsyncTransaction) -> AppliedEntry | None:
            # Reads first (Firestore needs every read before the first write).
            inbox, call = await self._read(transaction, inbox_ref, call_ref)
            inbox_data = inbox.to_dict() if inbox.exists else None
            if inbox_data is None or inbox_data.get("processed"):
                return None  # unknown, or processed by another worker or an earlier run
            job, job_ref = await self._job_of_call(transaction, call, entry.call_id)
            # Its status in its batch, taken before decide (which may change the object).
            counted_as = job.status if job is not None and job.batch_id else None
            try:
                decision = decide(job, entry)
            except Exception as exc:
                raise _PassThroughError(exc) from exc

            written = decision.job
            new_job = job_ref is None
            if written is not None and job_ref is None:
                # A new job: its id may be taken by another call.
                job_ref = jobs.document(document_id(written.job_id))
                (taken,) = await self._read(transaction, job_ref)
                if taken.exists:
                    requested = written.job_id
                    written = dataclasses.replace(written, job_id=derived_job_id(entry.call_id))
                    job_ref = jobs.document(document_id(written.job_id))
                    (taken,) = await self._read(transaction, job_ref)
                    if taken.exists:  # as in SQLite, where the insert fails
                        raise _PassThroughError(
                            JobIdTakenError(
                                f"job ids {requested!r} and {written.job_id!r}"
                                " both belong to other calls"
                            )
                        )
            completed_batch = None
            if written is not None:
                # The last read: the batch, counted in this same transaction.
                completed_batch = await self._count_in_batch(transaction, written, counted_as)
                assert job_ref is not None
                if new_job:
                    transaction.create(job_ref, self._job_fields(written))
                else:
                    transaction.set(job_ref, self._job_fields(written))
                transaction.set(call_ref, self._call_fields(written))
            transaction.update(
                inbox_ref,
                {"processed": True, "processed_at": time.time(), "outcome": decision.outcome},
            )
            return AppliedEntry(
                entry=entry,
                job=written,
                outcome=decision.outcome,
                completed_batch=completed_batch,
            )

        return await self._transact("apply_inbox", entry.call_id, run)

    async def _count_in_batch(
        self, transaction: AsyncTransaction, job: Job, old: JobStatus | None
    ) -> str | None:
        """Read the job's batch in the transaction and write it back with the job counted
        (a read, then a buffered write: call before the transaction's other writes).
        Returns the batch id if this completed it."""
        if not job.batch_id or old == job.status:
            return None
        ref = self._db.collection(self.batches_collection).document(document_id(job.batch_id))
        (snapshot,) = await self._read(transaction, ref)
        if not snapshot.exists:
            return None
        batch = batch_from_dict(json.loads(snapshot.get("doc")))
        completed = batch.count(old, job.status, now=time.time())
        transaction.set(ref, self._batch_fields(batch))
        return batch.batch_id if completed else None

    def _batch_fields(self, batch: Batch) -> dict[str, Any]:
        return {
            "batch_id": batch.batch_id,
            "doc": json.dumps(batch_to_dict(batch)),
            "notify_due_at": batch.notify_due_at,
        }

    async def create_batch(self, batch: Batch) -> None:
        ref = self._db.collection(self.batches_collection).document(document_id(batch.batch_id))

        async def create() -> None:
            try:
                await ref.create(
                    self._batch_fields(batch), retry=self._retry(), timeout=self.timeout
                )
            except api_exceptions.AlreadyExists:
                raise BatchExistsError(f"batch {batch.batch_id!r} exists already") from None

        await self._bounded("create_batch", create)

    async def get_batch(self, batch_id: str) -> Batch | None:
        ref = self._db.collection(self.batches_collection).document(document_id(batch_id))

        async def read() -> Batch | None:
            snapshot = await ref.get(retry=self._retry(), timeout=self.timeout)
            return _batch_from_snapshot(snapshot)

        return await self._bounded("get_batch", read)

    async def set_batch_manifest(self, batch_id: str, uri: str) -> None:
        ref = self._db.collection(self.batches_collection).document(document_id(batch_id))

        @async_transactional
        async def run(transaction: AsyncTransaction) -> None:
            (snapshot,) = await self._read(transaction, ref)
            if snapshot.exists:
                batch = batch_from_dict(json.loads(snapshot.get("doc")))
                batch.manifest_uri = uri
                transaction.set(ref, self._batch_fields(batch))

        await self._transact("set_batch_manifest", batch_id, run)

    async def _job_of_call(
        self, transaction: AsyncTransaction, call: _Snapshot, call_id: str
    ) -> tuple[Job | None, AsyncDocumentReference | None]:
        """The job a calls/ document points to, read in the transaction."""
        data = call.to_dict() if call.exists else None
        if not data or not data.get("job_id"):
            return None, None
        job_ref = self._db.collection(self.jobs_collection).document(
            document_id(str(data["job_id"]))
        )
        (snapshot,) = await self._read(transaction, job_ref)
        job = _job_from_snapshot(snapshot)
        if job is None or job.call_id != call_id:
            return None, None  # the job expired (TTL): the call starts afresh
        return job, job_ref

    async def _transact(
        self,
        what: str,
        call_id: str,
        run: Callable[[AsyncTransaction], Awaitable[T]],
    ) -> T:
        """Run ``run`` (an ``@async_transactional`` function) in a fresh transaction,
        again while concurrent transactions abort it, for ``transaction_timeout``.

        Within this process, transactions of one call run one at a time. That only
        spares Firestore needless contention (two rounds of this process applying the
        same entries); exactly-once comes from the transactions, across processes too."""
        lock = self._call_locks.get(call_id)
        if lock is None:
            lock = self._call_locks[call_id] = asyncio.Lock()
        loop = asyncio.get_running_loop()
        async with lock:
            deadline = loop.time() + self.transaction_timeout
            delay = 0.05
            attempts = 0
            while True:
                attempts += 1
                try:
                    return await self._bounded(what, lambda: self._attempt(what, run))
                except _ContentionError:
                    if loop.time() + delay >= deadline:
                        raise StoreUnavailableError(
                            f"firestore {what}: transaction contention, gave up after"
                            f" {attempts} attempts"
                        ) from None
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)

    async def _attempt(self, what: str, run: Callable[[AsyncTransaction], Awaitable[T]]) -> T:
        try:
            return await run(self._db.transaction())
        except Exception as exc:  # not CancelledError: a cancelled attempt stays cancelled
            _reraise_transaction_error(what, exc)
            raise

    async def _read(
        self, transaction: AsyncTransaction, *refs: AsyncDocumentReference
    ) -> list[_Snapshot]:
        # Through the client: AsyncTransaction.get_all awaits an async generator
        # (google-cloud-firestore 2.x), which raises TypeError.
        found: dict[str, _Snapshot] = {}
        async for snapshot in self._db.get_all(
            list(refs), transaction=transaction, retry=self._retry(), timeout=self.timeout
        ):
            found[snapshot.reference.path] = snapshot
        return [found[ref.path] for ref in refs]

    # --- jobs -----------------------------------------------------------------------
    async def register_job(self, job: Job) -> Job:
        assert job.call_id is not None
        call_id = job.call_id
        db = self._db
        call_ref = db.collection(self.calls_collection).document(document_id(call_id))
        job_ref = db.collection(self.jobs_collection).document(document_id(job.job_id))

        @async_transactional
        async def run(transaction: AsyncTransaction) -> Job:
            (call,) = await self._read(transaction, call_ref)
            existing, existing_ref = await self._job_of_call(transaction, call, call_id)
            if existing is not None and existing_ref is not None:
                # Its first callback got there first: complete that job.
                joins_batch = existing.batch_id is None and job.batch_id is not None
                merged = merge_registration(existing, job)
                if joins_batch:
                    await self._count_in_batch(transaction, merged, None)
                transaction.set(existing_ref, self._job_fields(merged))
                return merged
            (taken,) = await self._read(transaction, job_ref)
            if taken.exists:
                raise _PassThroughError(
                    JobIdTakenError(f"job id {job.job_id!r} belongs to another call")
                )
            await self._count_in_batch(transaction, job, None)
            transaction.create(job_ref, self._job_fields(job))
            transaction.set(call_ref, self._call_fields(job))
            return job

        return await self._transact("register_job", call_id, run)

    async def get_job(self, job_id: str) -> Job | None:
        ref = self._db.collection(self.jobs_collection).document(document_id(job_id))

        async def read() -> Job | None:
            snapshot = await ref.get(retry=self._retry(), timeout=self.timeout)
            return _job_from_snapshot(snapshot)

        return await self._bounded("get_job", read)

    async def get_job_by_call(self, call_id: str) -> Job | None:
        db = self._db
        call_ref = db.collection(self.calls_collection).document(document_id(call_id))

        async def read() -> Job | None:
            call = await call_ref.get(retry=self._retry(), timeout=self.timeout)
            data = call.to_dict() if call.exists else None
            if not data or not data.get("job_id"):
                return None
            job_ref = db.collection(self.jobs_collection).document(document_id(str(data["job_id"])))
            job = _job_from_snapshot(await job_ref.get(retry=self._retry(), timeout=self.timeout))
            return job if job is not None and job.call_id == call_id else None

        return await self._bounded("get_job_by_call", read)

    async def update_job(self, job_id: str, change: ChangeFn) -> Job | None:
        ref = self._db.collection(self.jobs_collection).document(document_id(job_id))
        return await self._update(
            "update_job", ref, _job_from_snapshot, change, self._job_fields, key=job_id
        )

    async def update_batch(self, batch_id: str, change: BatchChangeFn) -> Batch | None:
        ref = self._db.collection(self.batches_collection).document(document_id(batch_id))
        return await self._update(
            "update_batch", ref, _batch_from_snapshot, change, self._batch_fields, key=batch_id
        )

    async def _update(
        self,
        what: str,
        ref: AsyncDocumentReference,
        load: Callable[[_Snapshot], R | None],
        change: Callable[[R], R | None],
        fields: Callable[[R], dict[str, Any]],
        *,
        key: str,
    ) -> R | None:
        @async_transactional
        async def run(transaction: AsyncTransaction) -> R | None:
            (snapshot,) = await self._read(transaction, ref)
            try:
                after = apply_change(load(snapshot), change)
            except ValueError as exc:
                raise _PassThroughError(exc) from None
            if after is not None:
                transaction.set(ref, fields(after))
            return after

        return await self._transact(what, key, run)

    async def acquire_lease(
        self, name: str, holder: str, *, ttl_seconds: float, now: float
    ) -> bool:
        ref = self._db.collection(self.leases_collection).document(document_id(name))

        @async_transactional
        async def run(transaction: AsyncTransaction) -> bool:
            (snapshot,) = await self._read(transaction, ref)
            data = snapshot.to_dict() if snapshot.exists else None
            if data and data.get("holder") != holder and float(data["expires_at"]) > now:
                return False
            fields = {"name": name, "holder": holder, "expires_at": now + ttl_seconds}
            transaction.set(ref, fields)
            return True

        return await self._transact("acquire_lease", f"lease:{name}", run)

    async def release_lease(self, name: str, holder: str) -> None:
        ref = self._db.collection(self.leases_collection).document(document_id(name))

        @async_transactional
        async def run(transaction: AsyncTransaction) -> None:
            (snapshot,) = await self._read(transaction, ref)
            if snapshot.exists and (snapshot.to_dict() or {}).get("holder") == holder:
                transaction.delete(ref)

        await self._transact("release_lease", f"lease:{name}", run)

    async def due_notifications(self, *, now: float, limit: int) -> list[Job | Batch]:
        jobs = self._due_notifications_query(self.jobs_collection, now, limit)
        batches = self._due_notifications_query(self.batches_collection, now, limit)

        async def read() -> list[Job | Batch]:
            found: list[Job | Batch] = []
            for snapshot in await jobs.get(retry=self._retry(), timeout=self.timeout):
                if (job := _job_from_snapshot(snapshot)) is not None:
                    found.append(job)
            for snapshot in await batches.get(retry=self._retry(), timeout=self.timeout):
                if (batch := _batch_from_snapshot(snapshot)) is not None:
                    found.append(batch)
            found.sort(key=lambda subject: subject.notify_due_at or 0.0)
            return found[:limit]

        return await self._bounded("due_notifications", read)

    async def list_jobs(
        self, job_filter: JobFilter, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        after = decode_cursor(cursor) if cursor else None
        if limit <= 0 or (job_filter.statuses is not None and not job_filter.statuses):
            return JobPage([], None)
        query = self._jobs_query(job_filter, after=after, limit=limit + 1)

        async def read() -> JobPage:
            snapshots = await query.get(retry=self._retry(), timeout=self.timeout)
            jobs = [job for s in snapshots if (job := _job_from_snapshot(s)) is not None]
            more = len(jobs) > limit
            jobs = jobs[:limit]
            last = jobs[-1] if more else None
            return JobPage(jobs, encode_cursor(last.created_at, last.job_id) if last else None)

        return await self._bounded("list_jobs", read)

    def _jobs_query(
        self, job_filter: JobFilter, *, after: tuple[float, str] | None, limit: int
    ) -> AsyncQuery:
        """Equality filters (``in`` counts as one), then the sort: firestore.indexes.json
        has a composite index for every combination."""
        query = AsyncQuery(self._db.collection(self.jobs_collection))
        if job_filter.statuses is not None:
            statuses = sorted(str(status) for status in job_filter.statuses)
            if len(statuses) == 1:
                query = query.where(filter=FieldFilter("status", "==", statuses[0]))
            else:
                query = query.where(filter=FieldFilter("status", "in", statuses))
        for field in ("app", "function", "batch_id"):
            value = getattr(job_filter, field)
            if value is not None:
                query = query.where(filter=FieldFilter(field, "==", value))
        query = query.order_by("created_at").order_by("job_id")
        if after is not None:
            query = query.start_after({"created_at": after[0], "job_id": after[1]})
        return query.limit(limit)

    def _due_notifications_query(self, collection: str, now: float, limit: int) -> AsyncQuery:
        # One field, so Firestore's automatic single-field index serves it. Records
        # without a due notification have null there, which a range filter never matches.
        return (
            self._db.collection(collection)
            .where(filter=FieldFilter("notify_due_at", "<=", float(now)))
            .order_by("notify_due_at")
            .limit(limit)
        )

    def _pending_query(self, limit: int) -> AsyncQuery:
        return (
            self._db.collection(self.inbox_collection)
            .where(filter=FieldFilter("processed", "==", False))
            .order_by("received_at")
            .limit(limit)
        )

    def _job_fields(self, job: Job) -> dict[str, Any]:
        return {
            "job_id": job.job_id,
            "call_id": job.call_id,
            "status": str(job.status),
            "app": job.app,
            "function": job.function,
            "batch_id": job.batch_id,
            "created_at": float(job.created_at),
            "updated_at": float(job.updated_at),
            "doc": json.dumps(job_to_dict(job), separators=(",", ":")),
            "notify_due_at": job.notify_due_at,
            "expire_at": self._job_expiry(job),
        }

    def _call_fields(self, job: Job) -> dict[str, Any]:
        # Expires with its job, so a call outlives its job by no more than the TTL lag.
        return {"call_id": job.call_id, "job_id": job.job_id, "expire_at": self._job_expiry(job)}

    def _job_expiry(self, job: Job) -> datetime | None:
        """When the TTL policy may delete the job: only once it is finished."""
        if not job.status.terminal:
            return None
        finished = job.finished_at or job.updated_at or time.time()
        return _timestamp(finished) + self.job_retention

    # --- plumbing ---------------------------------------------------------------------
    @property
    def _db(self) -> AsyncClient:
        if self._client is None:
            raise StoreUnavailableError("firestore store is not open")
        return self._client

    def _retry(self) -> AsyncRetry:
        return AsyncRetry(
            predicate=_TRANSIENT, initial=0.05, maximum=0.5, multiplier=2.0, timeout=self.timeout
        )

    async def _bounded(
        self,
        what: str,
        operation: Callable[[], Coroutine[Any, Any, T]],
        *,
        budget: float | None = None,
    ) -> T:
        """Run ``operation`` for at most ``budget`` seconds and turn backend failures into
        StoreUnavailableError. On timeout the operation is cancelled but not waited for:
        its clean-up (a transaction's rollback RPC) must not hold the caller."""
        seconds = self.timeout if budget is None else budget
        task = asyncio.create_task(operation())
        try:
            done, _ = await asyncio.wait({task}, timeout=seconds + _GRACE_SECONDS)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            raise StoreUnavailableError(f"firestore {what}: no answer within {seconds:g} s")
        try:
            return task.result()
        except _BACKEND_ERRORS as exc:
            raise StoreUnavailableError(f"firestore {what}: {_describe(exc)}") from exc

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned call's failure is expected


def _reraise_transaction_error(what: str, exc: Exception) -> None:
    """Classify what came out of a transaction. The client rolls back on any error and
    a failing rollback replaces the original error (chained), so walk the chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    backend: BaseException | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _PassThroughError):
            raise current.error from None
        if isinstance(current, api_exceptions.Aborted):
            raise _ContentionError(str(current)) from exc
        if backend is None and isinstance(current, _BACKEND_ERRORS):
            backend = current
        current = current.__cause__ or current.__context__
    if backend is not None and backend is not exc:
        raise StoreUnavailableError(f"firestore {what}: {_describe(backend)}") from exc
    if isinstance(exc, ValueError) and not isinstance(exc, _BACKEND_ERRORS):
        # The client's own transaction state errors ("failed to commit in N attempts").
        raise StoreUnavailableError(f"firestore {what}: {_describe(exc)}") from exc


def _batch_from_snapshot(snapshot: _Snapshot) -> Batch | None:
    return batch_from_dict(json.loads(snapshot.get("doc"))) if snapshot.exists else None


def _job_from_snapshot(snapshot: _Snapshot) -> Job | None:
    if not snapshot.exists:
        return None
    data = snapshot.to_dict() or {}
    return job_from_dict(json.loads(data["doc"]))


def _timestamp(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds, UTC)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
        return f"gave up retrying: {_describe(exc.cause)}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
