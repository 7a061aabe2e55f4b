"""The seed's health report judges processing and notifying by what they leave behind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modalhub.app import create_app
from modalhub.config import Settings
from modalhub.hub import Hub
from modalhub.notifications.outbox import claim
from modalhub.storage.models import Job, JobStatus, Notification
from tests.helpers import ADMIN_TOKEN, SECRET

HEALTH = "/api/v3/webhooks/modal/health"


@pytest.fixture
async def external(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Hub]]:
    # An API process whose worker is elsewhere (and, here, not running at all).
    settings = Settings(
        data_dir=tmp_path / "data",
        webhook_secrets=[SECRET],
        admin_tokens=[ADMIN_TOKEN],
        processor="external",
        processing_stall_seconds=5,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            yield client, app.state.hub


async def test_a_notification_nobody_sends_makes_the_hub_unhealthy(
    external: tuple[httpx.AsyncClient, Hub],
) -> None:
    client, hub = external
    report = (await client.get(HEALTH)).json()
    assert report["status"] == "healthy" and report["features"]["notifications"] is True
    assert report["features"]["batch_intelligence"] is True

    job = Job(
        "job-h", "fc-h", JobStatus.SUCCEEDED, 1.0, 1.0, notification=Notification("http://x/")
    )
    job.schedule_notification(now=time.time() - 60)  # owed for a minute: no notifier runs
    await hub.store.register_job(job)
    response = await client.get(HEALTH)
    assert response.status_code == 503
    report = response.json()
    assert report["features"]["notifications"] is False
    assert report["checks"]["notifications"]["most_overdue_seconds"] >= 60

    # A notifier claims it (its next attempt is due later): healthy again.
    await hub.store.update_job("job-h", lambda j: claim(j, now=time.time(), lease_seconds=40))
    assert (await client.get(HEALTH)).status_code == 200
