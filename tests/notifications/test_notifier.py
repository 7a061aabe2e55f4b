"""Notifications to a job's notify_url: signed, retried, durable, each sent once.

The hub runs in process (inline processor and notifier); the subscriber is a real HTTP
server on loopback that verifies every request with the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modalhub.config import Settings
from modalhub.hub import Hub
from modalhub.notifications.notifier import Notifier
from modalhub.notifications.outbox import RetryPolicy
from modalhub.storage.models import Job, JobStatus, Notification
from modalhub.storage.protocols import JobStore
from modalhub_sdk.signing import parse_secrets
from tests.helpers import ADMIN_TOKEN, AUTH, CALLBACK_PATH, SECRET, event, free_port, signed
from tests.notifications.receiver import NOTIFY_SECRET, Receiver


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        webhook_secrets=[SECRET],
        notify_secrets=[NOTIFY_SECRET],
        admin_tokens=[ADMIN_TOKEN],
        log_format="json",
        sweep_interval_seconds=0.2,
        processor="inline",
        notify_poll_seconds=0.05,
        notify_retry_seconds=0.05,
        notify_max_attempts=3,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


async def track(client: httpx.AsyncClient, call_id: str, notify_url: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v3/executions",
        json={"call_id": call_id, "job_id": f"job-{call_id}", "notify_url": notify_url},
        headers=AUTH,
    )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def finish(client: httpx.AsyncClient, call_id: str, type_: str = "function.success") -> None:
    body = event(type_, call_id=call_id, result={"answer": 42}, execution_time=1.5)
    if type_ == "function.failure":
        body.update(result=None, error={"type": "ValueError", "message": "bad input"})
    raw, headers = signed(body, event_id=f"evt-{call_id}-{type_}")
    response = await client.post(CALLBACK_PATH, content=raw, headers=headers)
    assert response.status_code == 202, response.text


async def job_when(
    client: httpx.AsyncClient, job_id: str, notify_status: str, within: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        job: dict[str, Any] = (await client.get(f"/api/v3/jobs/{job_id}", headers=AUTH)).json()
        status = (job["notification"] or {}).get("status")
        if status == notify_status or time.monotonic() > deadline:
            assert status == notify_status, job
            return job
        await asyncio.sleep(0.02)


async def test_a_finished_job_is_posted_to_its_subscriber(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await track(client, "fc-n1", receiver.url())
    await finish(client, "fc-n1")
    job = await job_when(client, "job-fc-n1", "delivered")
    assert job["notification"]["attempts"] == 1 and job["notification"]["delivered_at"]
    (received,) = receiver.received
    assert received.verified and received.path == "/hooks/jobs"
    assert received.webhook_id == "ntf_job_job-fc-n1"
    assert received.body["type"] == "job.succeeded"
    data = received.body["data"]
    assert (data["job_id"], data["call_id"], data["status"]) == ("job-fc-n1", "fc-n1", "succeeded")
    assert data["result"] == {"answer": 42} and data["execution_time"] == 1.5
    assert "notification" not in data  # the outbox's own bookkeeping


async def test_a_failure_is_notified_with_its_error(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await track(client, "fc-n2", receiver.url())
    await finish(client, "fc-n2", "function.failure")
    await job_when(client, "job-fc-n2", "delivered")
    (received,) = receiver.received
    assert received.body["type"] == "job.failed"
    assert received.body["data"]["error"]["message"] == "bad input"


async def test_failed_attempts_are_retried_until_delivered(client: httpx.AsyncClient) -> None:
    receiver = Receiver(503, 500).start()
    try:
        await track(client, "fc-n3", receiver.url())
        await finish(client, "fc-n3")
        job = await job_when(client, "job-fc-n3", "delivered")
    finally:
        receiver.stop()
    assert [r.answered for r in receiver.received] == [503, 500, 200]
    assert {r.webhook_id for r in receiver.received} == {"ntf_job_job-fc-n3"}  # one message
    assert (job["notification"]["attempts"], job["notification"]["error"]) == (3, None)


async def test_giving_up_then_redelivering(client: httpx.AsyncClient) -> None:
    receiver = Receiver(500, 502, 503).start()  # three attempts, all refused: give up
    try:
        await track(client, "fc-n4", receiver.url())
        await finish(client, "fc-n4")
        failed = await job_when(client, "job-fc-n4", "failed")
        owed = failed["notification"]
        assert (owed["attempts"], owed["error"]) == (3, "HTTP 503")
        await asyncio.sleep(0.3)  # several poll rounds: nothing more is sent
        assert len(receiver.received) == 3
        # The operator fixed the receiver: send it again.
        response = await client.post("/api/v3/jobs/job-fc-n4/notify", headers=AUTH)
        assert response.status_code == 202
        assert response.json()["notification"]["status"] == "pending"
        await job_when(client, "job-fc-n4", "delivered")
    finally:
        receiver.stop()
    assert [r.answered for r in receiver.received] == [500, 502, 503, 200]


async def test_only_the_start_of_an_error_body_is_read(client: httpx.AsyncClient) -> None:
    receiver = Receiver(500, 500, 500, error_body=b"x" * 20_000_000).start()  # 20 MB each
    try:
        await track(client, "fc-big", receiver.url())
        await finish(client, "fc-big")
        job = await job_when(client, "job-fc-big", "failed")
    finally:
        receiver.stop()
    error = job["notification"]["error"]
    assert error.startswith("HTTP 500: xxx") and len(error) <= 300


async def test_gone_stops_and_a_dead_receiver_gives_up(client: httpx.AsyncClient) -> None:
    receiver = Receiver(410).start()
    try:
        await track(client, "fc-n5", receiver.url())
        await finish(client, "fc-n5")
        gone = await job_when(client, "job-fc-n5", "failed")
    finally:
        receiver.stop()
    assert gone["notification"]["attempts"] == 1
    assert gone["notification"]["error"].startswith("HTTP 410")

    await track(client, "fc-n6", f"http://127.0.0.1:{free_port()}/nobody")
    await finish(client, "fc-n6")
    dead = await job_when(client, "job-fc-n6", "failed")
    assert dead["notification"]["attempts"] == 3
    assert "ConnectError" in dead["notification"]["error"]


async def test_notify_url_is_checked(client: httpx.AsyncClient, hub: Hub) -> None:
    for url in ("ftp://example.com/x", "not a url", "http://" + "a" * 2100 + ".com/"):
        response = await client.post(
            "/api/v3/executions", json={"call_id": "fc-bad", "notify_url": url}, headers=AUTH
        )
        assert response.status_code == 422, url
    assert await hub.store.get_job_by_call("fc-bad") is None
    # Not finished, or nothing to notify: the operator is told why.
    await track(client, "fc-n7", "http://127.0.0.1:9/hook")
    response = await client.post("/api/v3/jobs/job-fc-n7/notify", headers=AUTH)
    assert response.status_code == 409 and "is pending" in response.text
    plain = await client.post("/api/v3/executions", json={"call_id": "fc-n8"}, headers=AUTH)
    response = await client.post(f"/api/v3/jobs/{plain.json()['job_id']}/notify", headers=AUTH)
    assert response.status_code == 409 and "no notify_url" in response.text
    assert (await client.post("/api/v3/jobs/job-nope/notify", headers=AUTH)).status_code == 404
    assert (await client.post("/api/v3/jobs/job-fc-n7/notify")).status_code == 401


async def test_without_a_notify_secret_notify_url_is_refused(tmp_path: Path) -> None:
    from modalhub.app import create_app

    app = create_app(
        Settings(
            data_dir=tmp_path / "bare",
            webhook_secrets=[SECRET],
            admin_tokens=[ADMIN_TOKEN],
            processor="inline",
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            response = await client.post(
                "/api/v3/executions",
                json={"call_id": "fc-x", "notify_url": "http://127.0.0.1:9/hook"},
                headers=AUTH,
            )
    assert response.status_code == 400 and "MODALHUB_NOTIFY_SECRET" in response.text


def test_the_notify_secret_must_not_be_the_callback_secret() -> None:
    with pytest.raises(ValueError, match="must differ"):
        Settings(webhook_secrets=[SECRET], notify_secrets=[SECRET])


@pytest.fixture
async def ended_jobs(job_store: JobStore, receiver: Receiver) -> AsyncIterator[list[str]]:
    ids = []
    for index in range(12):
        job = Job(
            job_id=f"job-c{index}",
            call_id=f"fc-c{index}",
            status=JobStatus.SUCCEEDED,
            created_at=1.0,
            updated_at=1.0,
            notification=Notification(receiver.url()),
        )
        job.schedule_notification(now=time.time())
        await job_store.register_job(job)
        ids.append(job.job_id)
    yield ids


async def test_concurrent_notifiers_send_each_notification_once(
    job_store: JobStore, receiver: Receiver, ended_jobs: list[str]
) -> None:
    notifiers = [
        Notifier(
            job_store,
            keys=parse_secrets(NOTIFY_SECRET),
            policy=RetryPolicy(max_attempts=3, first_delay=0.05, max_delay=1),
            timeout=5,
            poll_seconds=0.05,
            concurrency=4,
        )
        for _ in range(3)
    ]
    tasks = [asyncio.create_task(n.run_forever()) for n in notifiers]
    try:
        await asyncio.to_thread(receiver.wait_for, len(ended_jobs), within=60)
        await asyncio.sleep(0.3)  # a few more rounds: nothing is sent twice
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ids = sorted(r.webhook_id for r in receiver.received)
    assert ids == sorted(f"ntf_job_{job_id}" for job_id in ended_jobs)
    for job_id in ended_jobs:
        job = await job_store.get_job(job_id)
        assert job is not None and job.notification is not None
        assert (job.notification.status, job.notification.attempts) == ("delivered", 1)


async def test_a_batch_job_that_could_not_spawn_is_notified(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    # This hub's local executor has no apps: the job fails at submission, and is notified.
    job = {"app": "numerics", "function": "count_primes", "notify_url": receiver.url("/b")}
    response = await client.post("/api/v3/batches", json={"jobs": [job]}, headers=AUTH)
    assert response.status_code == 202, response.text
    (submitted,) = response.json()["jobs"]
    await job_when(client, submitted["job_id"], "delivered")
    (received,) = receiver.received
    assert received.path == "/b" and received.body["type"] == "job.failed"
    assert "could not spawn" in received.body["data"]["error"]["message"]


async def test_a_batch_tells_its_subscriber_when_it_completes(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    jobs = [{"app": "numerics", "function": "count_primes"}] * 2  # neither can spawn here
    response = await client.post(
        "/api/v3/batches",
        json={"jobs": jobs, "batch_id": "b-n1", "notify_url": receiver.url("/batches")},
        headers=AUTH,
    )
    assert response.status_code == 202, response.text
    await asyncio.to_thread(receiver.wait_for, 1)
    (received,) = receiver.received
    assert received.verified and received.webhook_id == "ntf_batch_b-n1"
    assert received.body["type"] == "batch.completed"
    data = received.body["data"]
    assert data["batch_id"] == "b-n1" and data["counts"] == {"failed": 2}
    assert data["manifest_uri"] and data["manifest_uri"].endswith("manifest.json")
    view = (await client.get("/api/v3/batches/b-n1", headers=AUTH)).json()
    assert (view["notification"]["status"], view["notification"]["attempts"]) == ("delivered", 1)

    again = await client.post("/api/v3/batches/b-n1/notify", headers=AUTH)
    assert again.status_code == 202 and again.json()["notification"]["status"] == "pending"
    await asyncio.to_thread(receiver.wait_for, 2)
    assert [r.webhook_id for r in receiver.received] == ["ntf_batch_b-n1"] * 2
    missing = await client.post("/api/v3/batches/b-nope/notify", headers=AUTH)
    assert missing.status_code == 404
