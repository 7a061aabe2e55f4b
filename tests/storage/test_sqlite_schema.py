"""A data directory made by an earlier version opens, and gains the newer columns."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from modalhub.storage.models import Job, JobStatus, Notification, job_to_dict
from modalhub.storage.sqlite import SqliteStore

# The jobs table before notifications existed (no notify_due_at column).
OLD_JOBS = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, call_id TEXT UNIQUE, status TEXT NOT NULL, batch_id TEXT,
    app TEXT, function TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    doc TEXT NOT NULL
);
"""


async def test_an_old_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = Job("job-old", "fc-old", JobStatus.SUCCEEDED, 1.0, 2.0, app="numerics")
    doc = {k: v for k, v in job_to_dict(old).items() if not k.startswith("notif")}
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_JOBS)
        conn.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, NULL, ?, NULL, 1.0, 2.0, ?)",
            ("job-old", "fc-old", "succeeded", "numerics", json.dumps(doc)),
        )
    for opening in range(2):  # the second open finds the column there already
        store = SqliteStore(path, synchronous="NORMAL")
        await store.open()
        try:
            found = await store.get_job("job-old")
            assert found is not None and found.app == "numerics"
            if opening == 0:
                assert found.notification is None

            def schedule(job: Job) -> Job:
                job.notification = Notification("http://127.0.0.1:9/hook")
                job.schedule_notification(now=5.0)
                return job

            await store.update_job("job-old", schedule)
            due = await store.due_notifications(now=10.0, limit=5)
            assert [(j.job_id, j.notify_due_at) for j in due] == [("job-old", 5.0)]
        finally:
            await store.close()
