"""A real hub over loopback, killed -9 mid-stream: nothing acknowledged is lost, and
every acknowledged event is applied exactly once."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_TOKEN, AUTH, CALLBACK_PATH, SECRET, HubProcess, signed

CALLS = 60
MARKER = "RESULT-PAYLOAD-MARKER-7f3a"


def lifecycle(call: int) -> list[tuple[str, dict[str, Any]]]:
    call_id = f"fc-e2e-{call:03d}"
    meta = {"job_id": f"job-e2e-{call:03d}", "app": "e2e", "function": "work"}
    events: list[tuple[str, dict[str, Any]]] = [
        (f"{call_id}-start", {"type": "function.started", "call_id": call_id, "metadata": meta})
    ]
    for pct in (25, 50, 75):
        events.append(
            (
                f"{call_id}-p{pct}",
                {
                    "type": "function.progress",
                    "call_id": call_id,
                    "progress": {"percent": pct, "message": f"{pct}%"},
                    "metadata": meta,
                },
            )
        )
    events.append(
        (
            f"{call_id}-done",
            {
                "type": "function.success",
                "call_id": call_id,
                "result": {"value": call, "note": MARKER},
                "metadata": meta,
            },
        )
    )
    return events


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path / "hub")
    hub.start()
    yield hub
    hub.stop()


async def test_kill9_mid_stream_loses_nothing_acked(hub_process: HubProcess) -> None:
    rng = random.Random(7)
    events = [e for call in range(CALLS) for e in lifecycle(call)]
    # Duplicates (a sender's retries) and an arbitrary order.
    stream = events + rng.sample(events, len(events) // 3)
    rng.shuffle(stream)
    acked: Counter[str] = Counter()
    unacked: list[tuple[str, dict[str, Any]]] = []
    sent = 0
    killed = asyncio.Event()

    async def send(client: httpx.AsyncClient, item: tuple[str, dict[str, Any]]) -> None:
        nonlocal sent
        event_id, body = item
        raw, headers = signed(body, event_id=event_id)
        try:
            response = await client.post(
                hub_process.url + CALLBACK_PATH, content=raw, headers=headers
            )
        except httpx.HTTPError:
            unacked.append(item)
            return
        if response.status_code in (200, 202):
            acked[event_id] += 1
        else:
            assert response.status_code >= 500 or killed.is_set(), response.text
            unacked.append(item)
        sent += 1
        if sent == len(stream) // 2 and not killed.is_set():
            killed.set()
            hub_process.kill9()

    async def drive(items: list[tuple[str, dict[str, Any]]], concurrency: int) -> None:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                await send(client, queue.get_nowait())

        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))

    await drive(stream, concurrency=16)
    assert killed.is_set()
    acked_before_crash = set(acked)
    assert acked_before_crash, "nothing was acknowledged before the crash"

    hub_process.start()  # same data directory
    # The senders retry what was not acknowledged, and resend some that were.
    retries = unacked + rng.sample(events, 40)
    unacked = []
    await drive(retries, concurrency=8)
    assert not unacked, f"{len(unacked)} events still unacknowledged after the restart"
    all_ids = {event_id for event_id, _ in events}
    assert set(acked) == all_ids

    async with httpx.AsyncClient(base_url=hub_process.url, headers=AUTH, timeout=10) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = (await client.get("/api/v3/webhooks/modal/health")).json()
            if health["checks"]["inbox"]["pending"] == 0:
                break
            await asyncio.sleep(0.05)
        for call in range(CALLS):
            job = (await client.get(f"/api/v3/jobs/job-e2e-{call:03d}")).json()
            # Five distinct events per call, each applied exactly once.
            assert job["events_seen"] == 5, job
            assert job["status"] == "succeeded"
            assert job["progress_percent"] == 100
            assert job["result"] == {"value": call, "note": MARKER}

    with sqlite3.connect(hub_process.data_dir / "modalhub.sqlite3") as conn:
        rows = conn.execute("SELECT event_id, processed_at FROM inbox").fetchall()
    assert {event_id for event_id, _ in rows} == all_ids
    assert all(processed is not None for _, processed in rows)

    # Nothing secret or private reached the logs of either run.
    logs = hub_process.log_path.read_text()
    assert "job finished" in logs
    for forbidden in (SECRET, SECRET.removeprefix("whsec_"), ADMIN_TOKEN, MARKER, "v1,"):
        assert forbidden not in logs, forbidden


def test_hostile_http_input_gets_4xx_from_the_real_server(hub_process: HubProcess) -> None:
    url = hub_process.url + CALLBACK_PATH
    raw, headers = signed({"type": "function.started", "call_id": "fc-h"}, event_id="h-1")
    with httpx.Client(timeout=10) as client:
        huge = client.post(
            url, content=raw, headers=headers | {"webhook-signature": "v1," + "A" * 200_000}
        )
        assert 400 <= huge.status_code < 500, huge.status_code
        many = {f"x-filler-{i}": "y" * 100 for i in range(500)}
        crowded = client.post(url, content=raw, headers=headers | many)
        assert crowded.status_code < 500
        assert client.get(hub_process.url + "/readyz").status_code == 200
    with sqlite3.connect(hub_process.data_dir / "modalhub.sqlite3") as conn:
        stored = conn.execute("SELECT count(*) FROM inbox WHERE call_id = 'fc-h'").fetchone()[0]
    assert stored <= 1  # only the well-formed (crowded but signed) request may be stored
