"""`modalhub worker` serves the metrics of what it does (processing, notifications) on
MODALHUB_WORKER_METRICS_PORT; the API's /metrics covers the API process."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers import CALLBACK_PATH, HubProcess, event, free_port, signed


def sample(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_the_worker_reports_what_it_processed(tmp_path: Path) -> None:
    port = free_port()
    hub = HubProcess(tmp_path / "hub", MODALHUB_WORKER_METRICS_PORT=str(port))
    hub.start()
    try:
        raw, headers = signed(event("function.success", "fc-m1", result={"x": 1}), event_id="m1")
        assert httpx.post(hub.url + CALLBACK_PATH, content=raw, headers=headers).status_code == 202
        deadline = time.monotonic() + 20
        processed = 0.0
        while time.monotonic() < deadline and processed < 1:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                processed = sample(text, "modalhub_events_processed_total")
            except httpx.HTTPError:
                pass  # the worker is still starting
            time.sleep(0.05)
        assert processed == 1
        assert sample(text, "modalhub_processing_lag_seconds_count") == 1
        api = httpx.get(hub.url + "/metrics").text
        assert sample(api, "modalhub_webhooks_received_total") == 1  # received by the API
        assert sample(api, "modalhub_events_processed_total") == 0  # applied by the worker
    finally:
        hub.stop()
