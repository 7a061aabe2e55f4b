"""The embedded job store: one SQLite file in WAL mode, written with group commit.

Operations are queued; one flusher task takes whatever is queued (up to ``max_batch``),
runs each operation inside its own savepoint of one transaction on the event loop's
thread (point reads and writes take microseconds; a thread hop per operation would cost
more), and commits once, so a burst of callbacks costs one commit instead of one each.
With synchronous=FULL the commit's fsync runs in a worker thread so the loop keeps
accepting requests, which queue up for the next batch. A caller's future is resolved
only after the commit returned: nothing is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

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
    StoreUnavailableError,
    apply_change,
    decode_cursor,
    derived_job_id,
    encode_cursor,
    merge_registration,
)

log = structlog.get_logger(__name__)

Operation = Callable[[sqlite3.Connection], Any]
_Queued = tuple[Operation, "asyncio.Future[Any]", str]
READ, WRITE, ATOMIC = "read", "write", "atomic"
LOCK_WAIT_SECONDS = 10.0  # how long to wait for another process's write lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id     TEXT PRIMARY KEY,
    call_id      TEXT NOT NULL,
    type         TEXT NOT NULL,
    body         BLOB NOT NULL,
    signed_at    INTEGER NOT NULL,
    received_at  REAL NOT NULL,
    processed_at REAL,
    outcome      TEXT,
    source       TEXT NOT NULL DEFAULT 'webhook'
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (received_at) WHERE processed_at IS NULL;
CREATE TABLE IF NOT EXISTS jobs (
    job_id     TEXT PRIMARY KEY,
    call_id    TEXT UNIQUE,
    status     TEXT NOT NULL,
    batch_id   TEXT,
    app        TEXT,
    function   TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    doc        TEXT NOT NULL,
    notify_due_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    doc      TEXT NOT NULL,
    notify_due_at REAL
);
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, job_id);
"""
# Run after SCHEMA: columns added since a data directory may have been created.
MIGRATIONS = {
    ("jobs", "notify_due_at"): "ALTER TABLE jobs ADD COLUMN notify_due_at REAL",
    ("batches", "notify_due_at"): "ALTER TABLE batches ADD COLUMN notify_due_at REAL",
}
INDEXES_AFTER_MIGRATIONS = """
CREATE INDEX IF NOT EXISTS jobs_notify_due ON jobs (notify_due_at)
    WHERE notify_due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS batches_notify_due ON batches (notify_due_at)
    WHERE notify_due_at IS NOT NULL;
"""

_INBOX_COLUMNS = (
    "event_id, call_id, type, body, signed_at, received_at, processed_at, outcome, source"
)


class SqliteStore:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        max_batch: int = 1024,
        checkpoints: bool = True,
    ) -> None:
        self.path = path
        # WAL checkpoints copy the log into the database file and fsync it. A process
        # that sets checkpoints=False leaves that to another one sharing the file (the
        # API leaves it to its worker), keeping those pauses off its event loop.
        self.checkpoints = checkpoints
        self.synchronous = synchronous.upper()
        self.max_batch = max_batch
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------
    async def open(self) -> None:
        self._conn = await asyncio.to_thread(self._connect)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)  # let queued writes finish
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")  # only while setting up
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.executescript(SCHEMA)
        _migrate(conn)
        if not self.checkpoints:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA busy_timeout=0")  # from now on _begin() waits, asynchronously
        return conn

    async def ping(self) -> None:
        await self._run(
            lambda conn: conn.execute("SELECT count(*) FROM jobs LIMIT 1").fetchone(), kind=READ
        )

    # --- inbox --------------------------------------------------------------
    async def put_inbox(self, entry: InboxEntry) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO inbox (event_id, call_id, type, body, signed_at,"
                " received_at, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.event_id,
                    entry.call_id,
                    entry.type,
                    entry.body,
                    entry.signed_at,
                    entry.received_at,
                    entry.source,
                ),
            )
            return cursor.rowcount == 1

        return bool(await self._run(op, kind=WRITE))

    async def pending_inbox(self, *, limit: int) -> list[InboxEntry]:
        def op(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(
                f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE processed_at IS NULL"
                " ORDER BY received_at LIMIT ?",
                (limit,),
            ).fetchall()
            return [InboxEntry(*row) for row in rows]

        result: list[InboxEntry] = await self._run(op, kind=READ)
        return result

    async def inbox_backlog(self) -> InboxBacklog:
        def op(conn: sqlite3.Connection) -> InboxBacklog:
            count, oldest = conn.execute(
                "SELECT count(*), min(received_at) FROM inbox WHERE processed_at IS NULL"
            ).fetchone()
            return InboxBacklog(pending=int(count), oldest_received_at=oldest)

        result: InboxBacklog = await self._run(op, kind=READ)
        return result

    async def apply_inbox(
        self, entries: Sequence[InboxEntry], decide: DecideFn
    ) -> list[AppliedEntry]:
        def op(conn: sqlite3.Connection) -> list[AppliedEntry]:
            return _apply_batch(conn, entries, decide)

        result: list[AppliedEntry] = await self._run(op, kind=ATOMIC)
        return result

    # --- jobs ---------------------------------------------------------------
    async def register_job(self, job: Job) -> Job:
        assert job.call_id is not None

        def op(conn: sqlite3.Connection) -> Job:
            existing = _load_job(conn, "call_id", job.call_id or "")
            if existing is not None:
                joins_batch = existing.batch_id is None and job.batch_id is not None
                merged = merge_registration(existing, job)
                _write_job(conn, merged, new=False)
                if joins_batch:
                    _count_in_batch(conn, merged, None)
                return merged
            if _load_job(conn, "job_id", job.job_id) is not None:
                raise JobIdTakenError(f"job id {job.job_id!r} belongs to another call")
            _write_job(conn, job, new=True)
            _count_in_batch(conn, job, None)
            return job

        result: Job = await self._run(op, kind=ATOMIC)
        return result

    async def create_batch(self, batch: Batch) -> None:
        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO batches (batch_id, doc, notify_due_at) VALUES (?, ?, ?)",
                    (batch.batch_id, json.dumps(batch_to_dict(batch)), batch.notify_due_at),
                )
            except sqlite3.IntegrityError:
                raise BatchExistsError(f"batch {batch.batch_id!r} exists already") from None

        await self._run(op, kind=WRITE)

    async def get_batch(self, batch_id: str) -> Batch | None:
        def op(conn: sqlite3.Connection) -> Batch | None:
            return _load_batch(conn, batch_id)

        result: Batch | None = await self._run(op, kind=READ)
        return result

    async def set_batch_manifest(self, batch_id: str, uri: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            batch = _load_batch(conn, batch_id)
            if batch is not None:
                batch.manifest_uri = uri
                _write_batch(conn, batch)

        await self._run(op, kind=ATOMIC)

    async def get_job(self, job_id: str) -> Job | None:
        return await self._get_job_where("job_id", job_id)

    async def get_job_by_call(self, call_id: str) -> Job | None:
        return await self._get_job_where("call_id", call_id)

    async def _get_job_where(self, column: str, value: str) -> Job | None:
        def op(conn: sqlite3.Connection) -> Job | None:
            return _load_job(conn, column, value)

        result: Job | None = await self._run(op, kind=READ)
        return result

    async def update_job(self, job_id: str, change: ChangeFn) -> Job | None:
        def op(conn: sqlite3.Connection) -> Job | None:
            after = apply_change(_load_job(conn, "job_id", job_id), change)
            if after is not None:
                _write_job(conn, after, new=False)
            return after

        result: Job | None = await self._run(op, kind=ATOMIC)
        return result

    async def update_batch(self, batch_id: str, change: BatchChangeFn) -> Batch | None:
        def op(conn: sqlite3.Connection) -> Batch | None:
            after = apply_change(_load_batch(conn, batch_id), change)
            if after is not None:
                _write_batch(conn, after)
            return after

        result: Batch | None = await self._run(op, kind=ATOMIC)
        return result

    async def acquire_lease(
        self, name: str, holder: str, *, ttl_seconds: float, now: float
    ) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT holder, expires_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at",
                (name, holder, now + ttl_seconds),
            )
            return True

        return bool(await self._run(op, kind=ATOMIC))

    async def release_lease(self, name: str, holder: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

        await self._run(op, kind=WRITE)

    async def due_notifications(self, *, now: float, limit: int) -> list[Job | Batch]:
        def op(conn: sqlite3.Connection) -> list[Job | Batch]:
            rows = conn.execute(
                "SELECT * FROM ("
                " SELECT 'job', doc, notify_due_at FROM jobs WHERE notify_due_at <= ?"
                " ORDER BY notify_due_at LIMIT ?)"
                " UNION ALL SELECT * FROM ("
                " SELECT 'batch', doc, notify_due_at FROM batches WHERE notify_due_at <= ?"
                " ORDER BY notify_due_at LIMIT ?)"
                " ORDER BY 3 LIMIT ?",
                (now, limit, now, limit, limit),
            )
            return [
                job_from_dict(json.loads(doc))
                if kind == "job"
                else batch_from_dict(json.loads(doc))
                for kind, doc, _ in rows
            ]

        result: list[Job | Batch] = await self._run(op, kind=READ)
        return result

    async def list_jobs(
        self, job_filter: JobFilter, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        after = decode_cursor(cursor) if cursor else None
        where: list[str] = []
        params: list[Any] = []
        if job_filter.statuses is not None:
            statuses = sorted(str(status) for status in job_filter.statuses)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params += statuses
        for column in ("app", "function", "batch_id"):
            value = getattr(job_filter, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if after is not None:
            where.append("(created_at > ? OR (created_at = ? AND job_id > ?))")
            params += [after[0], after[0], after[1]]
        sql = "SELECT doc FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, job_id LIMIT ?"
        params.append(limit + 1)

        def op(conn: sqlite3.Connection) -> JobPage:
            jobs = [job_from_dict(json.loads(row[0])) for row in conn.execute(sql, params)]
            more = len(jobs) > limit
            jobs = jobs[:limit]
            last = jobs[-1] if more else None
            return JobPage(jobs, encode_cursor(last.created_at, last.job_id) if last else None)

        result: JobPage = await self._run(op, kind=READ)
        return result

    # --- group commit ----------------------------------------------------------
    async def _run(self, operation: Operation, *, kind: str) -> Any:
        """Run ``operation`` in the next batch. READ: one or more reads; WRITE: one SQL
        statement, atomic by itself; ATOMIC: several statements, given a savepoint so a
        failure undoes only their own work. A batch of reads only takes no write lock."""
        if self._conn is None:
            raise StoreUnavailableError("sqlite store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future, kind))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        # Starting as a task lets every request already read in this loop iteration
        # queue its operation first: they all share the next commit.
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            outcomes = await self._commit_batch(batch)
            for (_, future, _), (value, error) in zip(batch, outcomes, strict=True):
                if future.done():  # the caller went away (cancelled request); the write stands
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)

    async def _begin(self, conn: sqlite3.Connection) -> None:
        # Another worker process may hold the write lock: wait for it without blocking
        # this event loop (busy_timeout is 0 on the connection).
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.0005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.002)  # short: lock holders commit within milliseconds

    async def _commit_batch(self, batch: list[_Queued]) -> list[tuple[Any, BaseException | None]]:
        conn = self._conn
        if conn is None:
            return [(None, StoreUnavailableError("sqlite store is closed"))] * len(batch)
        outcomes: list[tuple[Any, BaseException | None]] = []
        if all(kind == READ for _, _, kind in batch):
            # Autocommit reads see the last commit (WAL) and never block a writer,
            # such as the other process of a `modalhub serve` with a worker.
            try:
                return [_call(operation, conn) for operation, _, _ in batch]
            except sqlite3.Error as exc:
                return [(None, StoreUnavailableError(f"sqlite: {exc}"))] * len(batch)
        try:
            await self._begin(conn)
            for operation, _, kind in batch:
                if kind != ATOMIC:
                    outcomes.append(_call(operation, conn))
                    continue
                # A savepoint per operation: a failing one must not undo the others.
                conn.execute("SAVEPOINT op")
                value, error = _call(operation, conn)
                if error is not None:
                    conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((value, error))
            if self.synchronous == "FULL":
                # The fsync happens off the event loop; the connection is not touched by
                # anything else meanwhile because the next batch waits for this one.
                await asyncio.to_thread(conn.execute, "COMMIT")
            else:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("sqlite commit failed", error=str(exc), batch=len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreUnavailableError(f"sqlite: {exc}")
            return [(None, failure)] * len(batch)
        return outcomes


def _migrate(conn: sqlite3.Connection) -> None:
    for (table, column), statement in MIGRATIONS.items():
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            try:
                conn.execute(statement)
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
    conn.executescript(INDEXES_AFTER_MIGRATIONS)


def _call(operation: Operation, conn: sqlite3.Connection) -> tuple[Any, BaseException | None]:
    try:
        return operation(conn), None
    except sqlite3.OperationalError:
        raise  # the database itself is failing: fail the whole batch
    except Exception as exc:
        return None, exc


def _load_batch(conn: sqlite3.Connection, batch_id: str) -> Batch | None:
    row = conn.execute("SELECT doc FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
    return batch_from_dict(json.loads(row[0])) if row else None


def _write_batch(conn: sqlite3.Connection, batch: Batch) -> None:
    conn.execute(
        "UPDATE batches SET doc = ?, notify_due_at = ? WHERE batch_id = ?",
        (json.dumps(batch_to_dict(batch)), batch.notify_due_at, batch.batch_id),
    )


def _count_in_batch(conn: sqlite3.Connection, job: Job, old: JobStatus | None) -> bool:
    """Count the job's move from ``old`` in its batch, if it has one; True if that
    completed the batch."""
    batch = _load_batch(conn, job.batch_id) if job.batch_id else None
    if batch is None or old == job.status:
        return False
    completed = batch.count(old, job.status, now=time.time())
    _write_batch(conn, batch)
    return completed


def _load_job(conn: sqlite3.Connection, column: str, value: str) -> Job | None:
    row = conn.execute(f"SELECT doc FROM jobs WHERE {column} = ?", (value,)).fetchone()
    return job_from_dict(json.loads(row[0])) if row else None


def _write_job(conn: sqlite3.Connection, job: Job, *, new: bool) -> None:
    doc = json.dumps(job_to_dict(job), separators=(",", ":"))
    params = (
        job.call_id,
        str(job.status),
        job.batch_id,
        job.app,
        job.function,
        job.created_at,
        job.updated_at,
        doc,
        job.notify_due_at,
        job.job_id,
    )
    if new:
        conn.execute(
            "INSERT INTO jobs (call_id, status, batch_id, app, function, created_at,"
            " updated_at, doc, notify_due_at, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params,
        )
    else:
        conn.execute(
            "UPDATE jobs SET call_id = ?, status = ?, batch_id = ?, app = ?, function = ?,"
            " created_at = ?, updated_at = ?, doc = ?, notify_due_at = ? WHERE job_id = ?",
            params,
        )


def _apply_batch(
    conn: sqlite3.Connection, entries: Sequence[InboxEntry], decide: DecideFn
) -> list[AppliedEntry]:
    """Apply entries in order inside the caller's transaction (savepoint), writing each
    touched job once. Entries already processed, by another worker or an earlier run,
    are skipped: that check and the marking happen in the same transaction."""
    placeholders = ",".join("?" * len(entries))
    unprocessed = {
        row[0]
        for row in conn.execute(
            "SELECT event_id FROM inbox WHERE processed_at IS NULL"
            f" AND event_id IN ({placeholders})",
            [entry.event_id for entry in entries],
        )
    }
    jobs: dict[str, Job | None] = {}  # by call id, as the batch leaves them
    # By call id: the status the job had in its batch when this batch of entries found it
    # (captured as values: a decide function may change the job object it is given).
    counted_as: dict[str, JobStatus | None] = {}
    new_calls: set[str] = set()
    touched: set[str] = set()
    applied: list[AppliedEntry] = []
    for entry in entries:
        if entry.event_id not in unprocessed:
            continue
        unprocessed.discard(entry.event_id)  # the same entry twice in one batch: once
        if entry.call_id not in jobs:
            found = _load_job(conn, "call_id", entry.call_id)
            jobs[entry.call_id] = found
            counted_as[entry.call_id] = found.status if found and found.batch_id else None
        job = jobs[entry.call_id]
        decision = decide(job, entry)
        if decision.job is not None:
            if job is None:
                if _load_job(conn, "job_id", decision.job.job_id) is not None:
                    decision.job.job_id = derived_job_id(entry.call_id)  # id taken by another call
                new_calls.add(entry.call_id)
            jobs[entry.call_id] = decision.job
            touched.add(entry.call_id)
        applied.append(AppliedEntry(entry=entry, job=decision.job, outcome=decision.outcome))

    completed: dict[str, str] = {}  # call id -> the batch its job completed
    for call_id in touched:
        job = jobs[call_id]
        assert job is not None
        _write_job(conn, job, new=call_id in new_calls)
        if _count_in_batch(conn, job, counted_as[call_id]) and job.batch_id:
            completed[call_id] = job.batch_id
    if completed:  # reported on the last entry applied for that call
        last: dict[str, int] = {a.entry.call_id: i for i, a in enumerate(applied)}
        for call_id, batch_id in completed.items():
            index = last[call_id]
            applied[index] = dataclasses.replace(applied[index], completed_batch=batch_id)
    now = time.time()
    conn.executemany(
        "UPDATE inbox SET processed_at = ?, outcome = ? WHERE event_id = ?",
        [(now, a.outcome, a.entry.event_id) for a in applied],
    )
    return applied
