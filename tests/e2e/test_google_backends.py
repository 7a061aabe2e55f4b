"""Real hub processes on the production backends: the official Firestore emulator and
fake-gcs-server. Two hubs share them, as replicas do on Kubernetes."""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulators import PROJECT, FakeGcsServer, FirestoreEmulator
from tests.helpers import AUTH, CALLBACK_PATH, HubProcess, signed

CALLS = 6


@pytest.fixture
def google_env(
    firestore_emulator: FirestoreEmulator, gcs_emulator: FakeGcsServer
) -> dict[str, str]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = f"results-{uuid.uuid4().hex[:12]}"
    storage.Client(project=PROJECT, credentials=AnonymousCredentials()).create_bucket(bucket)
    return {
        "MODALHUB_STORE": "firestore",
        "MODALHUB_BLOBS": "gcs",
        "MODALHUB_GCP_PROJECT": PROJECT,
        "MODALHUB_GCS_BUCKET": bucket,
        "MODALHUB_FIRESTORE_PREFIX": f"t{uuid.uuid4().hex[:8]}_",
        "MODALHUB_BACKEND_TIMEOUT_SECONDS": "3",
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
        "STORAGE_EMULATOR_HOST": f"http://{gcs_emulator.host}",
    }


@pytest.fixture
def two_hubs(tmp_path: Path, google_env: dict[str, str]) -> Iterator[tuple[HubProcess, HubProcess]]:
    # One applies callbacks inline, the other through its worker process: both paths
    # run against the same documents.
    first = HubProcess(tmp_path / "a", MODALHUB_PROCESSOR="inline", **google_env)
    second = HubProcess(tmp_path / "b", MODALHUB_PROCESSOR="worker", **google_env)
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def lifecycle(call: int) -> list[tuple[str, dict[str, Any]]]:
    call_id = f"fc-g{call}"
    meta = {"job_id": f"job-g{call}", "app": "boltz2", "function": "predict", "batch_id": "b"}
    structure = base64.b64encode(f"structure of {call}".encode()).decode()
    return [
        (f"{call_id}-s", {"type": "function.started", "call_id": call_id, "metadata": meta}),
        (
            f"{call_id}-p",
            {
                "type": "function.progress",
                "call_id": call_id,
                "metadata": meta,
                "progress": {"percent": 50, "message": "half"},
            },
        ),
        (
            f"{call_id}-ok",
            {
                "type": "function.success",
                "call_id": call_id,
                "metadata": meta,
                "result": {"affinity": call / 10, "structure_base64": structure},
            },
        ),
    ]


async def wait_processed(client: httpx.AsyncClient, url: str) -> None:
    deadline = time.monotonic() + 240  # contended batch counters are slow on the emulator
    while time.monotonic() < deadline:
        response = await client.get(url + "/api/v3/webhooks/modal/health")
        if response.status_code == 200 and response.json()["checks"]["inbox"]["pending"] == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the inbox was not drained in time")


async def test_two_hubs_apply_each_event_exactly_once(
    two_hubs: tuple[HubProcess, HubProcess], google_env: dict[str, str]
) -> None:
    from modalhub.storage.firestore import FirestoreStore
    from modalhub.storage.models import Batch

    # The callbacks name batch "b": its counters must end exact, whichever hub applies what.
    store = FirestoreStore(project=PROJECT, prefix=google_env["MODALHUB_FIRESTORE_PREFIX"])
    await store.open()
    await store.create_batch(Batch(batch_id="b", total=CALLS, created_at=time.time()))
    rng = random.Random(3)
    events = [item for call in range(CALLS) for item in lifecycle(call)]
    # Every event goes to both hubs (a sender retrying against another replica), in
    # independent random orders, concurrently.
    deliveries = [(hub, item) for hub in two_hubs for item in events]
    rng.shuffle(deliveries)
    codes: dict[str, list[int]] = {}

    async with httpx.AsyncClient(timeout=30) as client:

        async def deliver(hub: HubProcess, item: tuple[str, dict[str, Any]]) -> None:
            event_id, body = item
            raw, headers = signed(body, event_id=event_id)
            response = await client.post(hub.url + CALLBACK_PATH, content=raw, headers=headers)
            codes.setdefault(event_id, []).append(response.status_code)

        semaphore = asyncio.Semaphore(8)

        async def limited(hub: HubProcess, item: tuple[str, dict[str, Any]]) -> None:
            async with semaphore:
                await deliver(hub, item)

        await asyncio.gather(*(limited(hub, item) for hub, item in deliveries))
        # Each event was stored once: one 202, one duplicate.
        assert all(sorted(c) == [200, 202] for c in codes.values()), codes
        for hub in two_hubs:
            await wait_processed(client, hub.url)

        for call in range(CALLS):
            job = (
                await client.get(f"{two_hubs[0].url}/api/v3/jobs/job-g{call}", headers=AUTH)
            ).json()
            assert job["status"] == "succeeded", job
            assert job["events_seen"] == 3  # three distinct events, each applied once
            assert job["progress_percent"] == 100
            assert job["result"] == {"affinity": call / 10}
            uri = job["result_uris"]["structure"]
            assert uri == f"gs://{google_env['MODALHUB_GCS_BUCKET']}/results/job-g{call}/structure"

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = storage.Client(project=PROJECT, credentials=AnonymousCredentials()).bucket(
        google_env["MODALHUB_GCS_BUCKET"]
    )
    batch = await store.get_batch("b")
    await store.close()
    assert batch is not None and batch.counts == {"succeeded": CALLS}
    assert batch.completed_at is not None
    manifest = "results/batches/b/manifest.json"
    assert batch.manifest_uri == f"gs://{google_env['MODALHUB_GCS_BUCKET']}/{manifest}"
    names = sorted(blob.name for blob in bucket.list_blobs())
    expected = [
        f"results/job-g{call}/{name}"
        for call in range(CALLS)
        for name in ("result.json", "structure")
    ]
    assert names == sorted([*expected, manifest])
    for call in range(CALLS):
        blob = bucket.get_blob(f"results/job-g{call}/structure")
        assert blob is not None and blob.download_as_bytes() == f"structure of {call}".encode()


async def test_store_outage_answers_503_and_recovers(
    tmp_path: Path, google_env: dict[str, str], firestore_emulator: FirestoreEmulator
) -> None:
    hub = HubProcess(tmp_path / "hub", MODALHUB_PROCESSOR="inline", **google_env)
    hub.start()
    try:
        async with httpx.AsyncClient(timeout=30) as client:

            async def post(event_id: str) -> httpx.Response:
                raw, headers = signed(
                    {"type": "function.started", "call_id": "fc-out"}, event_id=event_id
                )
                return await client.post(hub.url + CALLBACK_PATH, content=raw, headers=headers)

            assert (await post("before")).status_code == 202
            firestore_emulator.stop()
            try:
                started = time.monotonic()
                down = await post("during")
                assert down.status_code == 503, down.text
                assert down.headers["retry-after"]
                assert time.monotonic() - started < 15
                assert (await client.get(hub.url + "/readyz")).status_code == 503
            finally:
                firestore_emulator.start()
            deadline = time.monotonic() + 60
            while (await client.get(hub.url + "/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "the hub did not recover"
                await asyncio.sleep(0.2)
            # The sender's retry now lands (the emulator restarted empty).
            assert (await post("during")).status_code == 202
    finally:
        hub.stop()
