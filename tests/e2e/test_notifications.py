"""A real `modalhub serve` tells a subscriber when a job ends: a job run by the local
executor is POSTed, signed, to its notify_url, a batch once its last job has ended, and a
notification the subscriber could not take yet survives kill -9 of the hub and is
delivered after the restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.helpers import AUTH, HubProcess, free_port
from tests.notifications.receiver import NOTIFY_SECRET, Receiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(
        tmp_path / "hub",
        MODALHUB_LOCAL_APPS=str(ROOT / "modal_apps" / "numerics.py"),
        MODALHUB_NOTIFY_SECRET=NOTIFY_SECRET,
        MODALHUB_NOTIFY_RETRY_SECONDS="0.2",
        MODALHUB_NOTIFY_RETRY_MAX_SECONDS="0.5",
        MODALHUB_NOTIFY_POLL_SECONDS="0.1",
    )
    hub.start()
    yield hub
    hub.stop()


def submit(hub: HubProcess, notify_url: str, **kwargs: Any) -> dict[str, Any]:
    body = {"app": "numerics", "function": "count_primes", "kwargs": kwargs}
    body["notify_url"] = notify_url
    response = httpx.post(f"{hub.url}/api/v3/jobs", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 202, response.text
    submitted: dict[str, Any] = response.json()
    return submitted


def job_of(hub: HubProcess, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = httpx.get(f"{hub.url}/api/v3/jobs/{job_id}", headers=AUTH).json()
    return job


def test_a_job_run_by_the_executor_notifies_its_subscriber(hub: HubProcess) -> None:
    receiver = Receiver().start()
    try:
        submitted = submit(hub, receiver.url(), limit=200_000, segment=20_000)
        receiver.wait_for(1, within=60)
    finally:
        receiver.stop()
    (received,) = receiver.received
    assert received.verified and received.webhook_id == f"ntf_job_{submitted['job_id']}"
    assert received.body["type"] == "job.succeeded"
    data = received.body["data"]
    assert data["call_id"] == submitted["call_id"] and data["completed_by"] == "webhook"
    assert data["result"] == {"limit": 200_000, "primes": 17_984, "largest": 199_999}
    job = job_of(hub, submitted["job_id"])
    assert (job["notification"]["status"], job["notification"]["attempts"]) == ("delivered", 1)


def test_an_undelivered_notification_survives_kill_9(hub: HubProcess) -> None:
    port = free_port()  # the subscriber is down when the job ends
    submitted = submit(hub, f"http://127.0.0.1:{port}/hooks/jobs", limit=2_000)
    deadline = time.monotonic() + 60
    job = job_of(hub, submitted["job_id"])
    while job["notification"]["attempts"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        job = job_of(hub, submitted["job_id"])
    assert job["status"] == "succeeded" and job["notification"]["status"] == "pending", job
    assert "ConnectError" in job["notification"]["error"]

    hub.kill9()  # the hub and its worker die with the notification still owed
    receiver = Receiver(port=port).start()
    try:
        hub.start()
        receiver.wait_for(1, within=30)
    finally:
        receiver.stop()
    assert [r.webhook_id for r in receiver.delivered()] == [f"ntf_job_{submitted['job_id']}"]
    assert receiver.received[0].body["data"]["result"]["primes"] == 303
    job = job_of(hub, submitted["job_id"])
    assert job["notification"]["status"] == "delivered"
    assert job["notification"]["attempts"] >= 3


def test_a_batch_is_notified_once_with_its_manifest(hub: HubProcess) -> None:
    receiver = Receiver().start()
    try:
        jobs = [
            {"app": "numerics", "function": "count_primes", "kwargs": {"limit": limit}}
            for limit in (1_000, 2_000, 3_000)
        ]
        body = {"jobs": jobs, "notify_url": receiver.url("/batches")}
        response = httpx.post(f"{hub.url}/api/v3/batches", json=body, headers=AUTH, timeout=30)
        assert response.status_code == 202, response.text
        receiver.wait_for(1, within=60)
        time.sleep(0.5)  # a few poll rounds: nothing more arrives
    finally:
        receiver.stop()
    (received,) = receiver.received  # one notification for the batch, none for its jobs
    batch_id = response.json()["batch_id"]
    assert received.verified and received.webhook_id == f"ntf_batch_{batch_id}"
    data = received.body["data"]
    assert data["counts"] == {"succeeded": 3} and data["completed_at"] is not None
    manifest = json.loads(Path(urlparse(data["manifest_uri"]).path).read_text())
    assert sorted(job["result"]["primes"] for job in manifest["jobs"]) == [168, 303, 430]
