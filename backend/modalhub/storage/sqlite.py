"""The embedded job store: one SQLite file in WAL mode, written with group commit.

Every operation runs on one writer thread that owns the connection. The thread takes
whatever operations are queued (up to ``max_batch``), runs each inside its own
savepoint of one transaction and commits once, so a burst of callbacks costs one
commit (one fsync with synchronous=FULL) instead of one each. A caller's future is
resolved only after the commit returned: nothing is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from modalhub.storage.models import InboxEntry, Job, job_from_dict, job_to_dict
from modalhub.storage.protocols import (
    AppliedEntry,
    DecideFn,
    StoreUnavailableError,
    derived_job_id,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
_Item = tuple[Operation, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
_STOP = object()

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id     TEXT PRIMARY KEY,
    call_id      TEXT NOT NULL,
    type         TEXT NOT NULL,
    body         BLOB NOT NULL,
    signed_at    INTEGER NOT NULL,
    received_at  REAL NOT NULL,
    processed_at REAL,
    outcome      TEXT
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (received_at) WHERE processed_at IS NULL;
CREATE TABLE IF NOT EXISTS jobs (
    job_id     TEXT PRIMARY KEY,
    call_id    TEXT UNIQUE,
    status     TEXT NOT NULL,
    batch_id   TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
"""

_INBOX_COLUMNS = "event_id, call_id, type, body, signed_at, received_at, processed_at, outcome"


class SqliteStore:
    def __init__(self, path: Path, *, synchronous: str = "FULL", max_batch: int = 1024) -> None:
        self.path = path
        self.synchronous = synchronous
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._fatal: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._writer,
            args=(ready, asyncio.get_running_loop()),
            daemon=True,
            name="sqlite-writer",
        )
        self._thread.start()
        await ready

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT count(*) FROM jobs LIMIT 1").fetchone())

    # --- inbox --------------------------------------------------------------
    async def put_inbox(self, entry: InboxEntry) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO inbox (event_id, call_id, type, body, signed_at,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.event_id,
                    entry.call_id,
                    entry.type,
                    entry.body,
                    entry.signed_at,
                    entry.received_at,
                ),
            )
            return cursor.rowcount == 1

        return bool(await self._run(op))

    async def pending_inbox(self, *, limit: int) -> list[InboxEntry]:
        def op(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(
                f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE processed_at IS NULL"
                " ORDER BY received_at LIMIT ?",
                (limit,),
            ).fetchall()
            return [InboxEntry(*row) for row in rows]

        result: list[InboxEntry] = await self._run(op)
        return result

    async def count_pending_inbox(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT count(*) FROM inbox WHERE processed_at IS NULL").fetchone()
            return int(row[0])

        result: int = await self._run(op)
        return result

    async def get_inbox(self, event_id: str) -> InboxEntry | None:
        def op(conn: sqlite3.Connection) -> InboxEntry | None:
            row = conn.execute(
                f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE event_id = ?", (event_id,)
            ).fetchone()
            return InboxEntry(*row) if row else None

        result: InboxEntry | None = await self._run(op)
        return result

    async def apply_inbox(
        self, entries: Sequence[InboxEntry], decide: DecideFn
    ) -> list[AppliedEntry]:
        def op(conn: sqlite3.Connection) -> list[AppliedEntry]:
            applied: list[AppliedEntry] = []
            for entry in entries:
                # One savepoint per entry: a failing entry must not undo the others.
                conn.execute("SAVEPOINT entry")
                try:
                    result = _apply_one(conn, entry, decide)
                except Exception:
                    conn.execute("ROLLBACK TO entry")
                    conn.execute("RELEASE entry")
                    raise
                conn.execute("RELEASE entry")
                if result is not None:
                    applied.append(result)
            return applied

        result: list[AppliedEntry] = await self._run(op)
        return result

    # --- jobs ---------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job | None:
        return await self._get_job_where("job_id", job_id)

    async def get_job_by_call(self, call_id: str) -> Job | None:
        return await self._get_job_where("call_id", call_id)

    async def _get_job_where(self, column: str, value: str) -> Job | None:
        def op(conn: sqlite3.Connection) -> Job | None:
            return _load_job(conn, column, value)

        result: Job | None = await self._run(op)
        return result

    # --- the writer thread ----------------------------------------------------
    async def _run(self, operation: Operation) -> Any:
        if self._thread is None or self._fatal is not None:
            raise StoreUnavailableError(f"sqlite store is not open: {self._fatal or 'closed'}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((operation, future, loop))
        return await future

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")  # other worker processes share the file
        conn.executescript(SCHEMA)
        return conn

    def _writer(self, ready: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # report to open() instead of dying silently
            self._fatal = exc
            failed: list[_Outcome] = [(ready, None, exc)]
            loop.call_soon_threadsafe(_settle, failed)
            return
        opened: list[_Outcome] = [(ready, None, None)]
        loop.call_soon_threadsafe(_settle, opened)
        stopping = False
        while not stopping:
            batch: list[_Item] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit_batch(conn, batch)
        conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, future, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = operation(conn)
                except sqlite3.OperationalError:
                    raise  # the database itself is failing: fail the whole batch
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((future, value, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("sqlite commit failed", error=str(exc), batch=len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreUnavailableError(f"sqlite: {exc}")
            outcomes = [(future, None, failure) for _, future, _ in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, _, loop), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in items:
        if future.done():  # the caller went away (cancelled request); the write stands
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _load_job(conn: sqlite3.Connection, column: str, value: str) -> Job | None:
    row = conn.execute(f"SELECT doc FROM jobs WHERE {column} = ?", (value,)).fetchone()
    return job_from_dict(json.loads(row[0])) if row else None


def _write_job(conn: sqlite3.Connection, job: Job, *, new: bool) -> None:
    doc = json.dumps(job_to_dict(job), separators=(",", ":"))
    params = (job.call_id, str(job.status), job.batch_id, job.created_at, job.updated_at, doc)
    if new:
        conn.execute(
            "INSERT INTO jobs (call_id, status, batch_id, created_at, updated_at, doc, job_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*params, job.job_id),
        )
    else:
        conn.execute(
            "UPDATE jobs SET call_id = ?, status = ?, batch_id = ?, created_at = ?,"
            " updated_at = ?, doc = ? WHERE job_id = ?",
            (*params, job.job_id),
        )


def _apply_one(
    conn: sqlite3.Connection, entry: InboxEntry, decide: DecideFn
) -> AppliedEntry | None:
    row = conn.execute(
        "SELECT processed_at FROM inbox WHERE event_id = ?", (entry.event_id,)
    ).fetchone()
    if row is None or row[0] is not None:
        return None  # unknown or already applied (by another worker or an earlier run)
    job = _load_job(conn, "call_id", entry.call_id)
    decision = decide(job, entry)
    if decision.job is not None:
        if job is None and _load_job(conn, "job_id", decision.job.job_id) is not None:
            decision.job.job_id = derived_job_id(entry.call_id)  # named id belongs to another call
        _write_job(conn, decision.job, new=job is None)
    conn.execute(
        "UPDATE inbox SET processed_at = ?, outcome = ? WHERE event_id = ?",
        (time.time(), decision.outcome, entry.event_id),
    )
    return AppliedEntry(entry=entry, job=decision.job, outcome=decision.outcome)
