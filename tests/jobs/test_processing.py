"""Processing after the ack: results to blobs, jobs readable, the start-up sweep."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx

from modalhub.app import create_app
from modalhub.config import Settings
from modalhub.hub import Hub
from modalhub.storage.models import InboxEntry
from modalhub.storage.sqlite import SqliteStore
from tests.helpers import AUTH, CALLBACK_PATH, event, signed

STRUCTURE = b"ATOM      1  N   MET A   1      27.340  24.430   2.614\n" * 20


async def send(client: httpx.AsyncClient, body: dict[str, object], event_id: str) -> int:
    raw, headers = signed(body, event_id=event_id)
    return (await client.post(CALLBACK_PATH, content=raw, headers=headers)).status_code


async def test_success_writes_results_and_updates_job(client: httpx.AsyncClient, hub: Hub) -> None:
    result = {
        "affinity": 0.63,
        "structure_file_base64": base64.b64encode(STRUCTURE).decode(),
        "per_residue": list(range(100)),
    }
    meta = {"job_id": "job-abc", "batch_id": "batch-1", "app": "boltz2", "function": "predict"}
    assert await send(client, event("function.started", "fc-9", metadata=meta), "s1") == 202
    assert (
        await send(
            client,
            event("function.success", "fc-9", result=result, metadata=meta, execution_time=205.3),
            "s2",
        )
        == 202
    )
    await hub.processor.drain()

    response = await client.get("/api/v3/jobs/job-abc", headers=AUTH)
    assert response.status_code == 200
    job = response.json()
    assert (job["status"], job["call_id"], job["batch_id"], job["app"]) == (
        "succeeded",
        "fc-9",
        "batch-1",
        "boltz2",
    )
    assert job["result"] == {"affinity": 0.63}  # scalars only; the rest is in blobs
    assert job["execution_time"] == 205.3 and job["events_seen"] == 2
    assert await hub.blobs.get("results/job-abc/structure_file") == STRUCTURE
    stored = json.loads(await hub.blobs.get("results/job-abc/result.json") or b"null")
    assert stored["per_residue"] == list(range(100))
    assert stored["structure_file_base64"] == job["result_uris"]["structure_file"]

    by_call = await client.get("/api/v3/executions/fc-9", headers=AUTH)
    assert by_call.json()["job_id"] == "job-abc"


async def test_late_events_do_not_change_a_finished_job(
    client: httpx.AsyncClient, hub: Hub
) -> None:
    await send(
        client, event("function.failure", "fc-f", error={"type": "OOM", "message": "x"}), "f1"
    )
    await hub.processor.drain()
    await send(client, event("function.success", "fc-f", result={"ok": True}), "f2")
    await hub.processor.drain()
    job = await hub.store.get_job_by_call("fc-f")
    assert job is not None and job.status == "failed" and job.result is None
    assert await hub.blobs.get(f"results/{job.job_id}/result.json") is None


async def test_jobs_api_needs_the_operator_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v3/jobs/job-x")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert (await client.get("/api/v3/jobs/job-x", headers=wrong)).status_code == 401
    assert (await client.get("/api/v3/jobs/job-x", headers=AUTH)).status_code == 404


async def test_startup_sweep_applies_entries_a_crash_left(
    settings: Settings, tmp_path: Path
) -> None:
    # Entries acknowledged by a hub that died before processing them.
    store = SqliteStore(settings.sqlite_path)
    await store.open()
    for index in range(3):
        body = json.dumps(event("function.success", f"fc-left-{index}", result={"n": index}))
        await store.put_inbox(
            InboxEntry(
                f"left-{index}",
                f"fc-left-{index}",
                "function.success",
                body.encode(),
                signed_at=int(time.time()),
                received_at=time.time(),
            )
        )
    await store.close()

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub: Hub = app.state.hub
        # No callback arrives and nobody calls drain(): the start-up round must find them.
        deadline = time.monotonic() + 10
        while (await hub.store.inbox_backlog()).pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for index in range(3):
            job = await hub.store.get_job_by_call(f"fc-left-{index}")
            assert job is not None and job.status == "succeeded" and job.events_seen == 1
            assert job.result == {"n": index}


async def test_listing_and_active_executions(client: httpx.AsyncClient, hub: Hub) -> None:
    for index in range(5):
        meta = {"app": "boltz2" if index % 2 else "video", "batch_id": "b-1"}
        await send(client, event("function.started", f"fc-l{index}", metadata=meta), f"l{index}")
    await send(client, event("function.success", "fc-l0"), "l0-done")
    assert hub.processor is not None
    await hub.processor.drain()

    active = (await client.get("/api/v3/webhooks/active-executions", headers=AUTH)).json()
    assert [job["call_id"] for job in active["executions"]] == ["fc-l1", "fc-l2", "fc-l3", "fc-l4"]

    first = (await client.get("/api/v3/jobs?limit=3&batch_id=b-1", headers=AUTH)).json()
    assert len(first["jobs"]) == 3 and first["next_cursor"]
    rest = (
        await client.get(
            f"/api/v3/jobs?limit=3&batch_id=b-1&cursor={first['next_cursor']}", headers=AUTH
        )
    ).json()
    assert len(rest["jobs"]) == 2 and rest["next_cursor"] is None
    done = (await client.get("/api/v3/jobs?status=succeeded", headers=AUTH)).json()
    assert [job["call_id"] for job in done["jobs"]] == ["fc-l0"]
    boltz = (await client.get("/api/v3/jobs?app=boltz2&status=running", headers=AUTH)).json()
    assert [job["call_id"] for job in boltz["jobs"]] == ["fc-l1", "fc-l3"]

    assert (await client.get("/api/v3/jobs?cursor=@@", headers=AUTH)).status_code == 400
    assert (await client.get("/api/v3/jobs?status=exploded", headers=AUTH)).status_code == 422
    assert (await client.get("/api/v3/jobs?limit=0", headers=AUTH)).status_code == 422
    assert (await client.get("/api/v3/webhooks/active-executions")).status_code == 401
