"""Jobs submitted to a real `modalhub serve`, run by the local executor from the example
Modal apps, report back through the worker SDK: success, failure, timeout, cancel, and
the poller for a function that sends no callbacks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.helpers import AUTH, HubProcess

ROOT = Path(__file__).resolve().parents[2]
TOOLBOX = """
import threading
import modal
from modalhub_sdk import report_progress, report_to_hub

app = modal.App("toolbox")

@app.function(timeout=30)
@report_to_hub(timeout=4, soft_deadline_margin=2)
def hang() -> None:
    threading.Event().wait()

@app.function(timeout=600)
@report_to_hub
def wait_for_cancel() -> None:
    threading.Event().wait()

@app.function()
def plain_add(a: int, b: int) -> int:  # no SDK: only the poller can tell
    return a + b

@app.cls(timeout=60)
class Doubler:
    @modal.enter()
    def load(self) -> None:
        self.factor = 2  # a model load, once per container

    @modal.method()
    @report_to_hub
    def double(self, x: int) -> dict:
        report_progress(50, "halfway")
        return {"value": self.factor * x}
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    data = tmp_path_factory.mktemp("local-jobs")
    toolbox = data / "toolbox.py"
    toolbox.write_text(TOOLBOX)
    apps = [ROOT / "modal_apps" / "imagekit.py", ROOT / "modal_apps" / "numerics.py", toolbox]
    hub = HubProcess(
        data / "hub",
        MODALHUB_LOCAL_APPS=",".join(str(path) for path in apps),
        MODALHUB_POLL_INTERVAL_SECONDS="0.5",
    )
    hub.start()
    yield hub
    hub.stop()


def submit(hub: HubProcess, app: str, function: str, **kwargs: Any) -> dict[str, Any]:
    body = {"app": app, "function": function, "kwargs": kwargs}
    response = httpx.post(f"{hub.url}/api/v3/jobs", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 202, response.text
    submitted: dict[str, Any] = response.json()
    return submitted


def wait_until_finished(
    hub: HubProcess, submitted: dict[str, Any], within: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(submitted["status_url"], headers=AUTH).json()
        if job["status"] in ("succeeded", "failed", "timed_out", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job still {job['status']} after {within} s: {job}")


def test_example_apps_run_to_completion(hub: HubProcess) -> None:
    primes = submit(hub, "numerics", "count_primes", limit=300_000, segment=30_000)
    edges = submit(hub, "imagekit", "edges", width=64, height=48, max_iter=30)
    assert primes["call_id"].startswith("lc-") and primes["status"] == "pending"

    job = wait_until_finished(hub, primes)
    assert job["status"] == "succeeded" and job["completed_by"] == "webhook"
    assert job["result"] == {"limit": 300_000, "primes": 25_997, "largest": 299_993}
    assert job["progress_percent"] == 100 and job["events_seen"] >= 3

    job = wait_until_finished(hub, edges)
    assert job["status"] == "succeeded"
    assert job["result"]["width"] == 64 and job["result"]["edge_pixels"] > 0
    png = Path(urlparse(job["result_uris"]["edges_png"]).path).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_method_of_a_modal_cls_reports_like_a_function(hub: HubProcess) -> None:
    job = wait_until_finished(hub, submit(hub, "toolbox", "Doubler.double", x=21))
    assert job["status"] == "succeeded" and job["completed_by"] == "webhook"
    assert job["result"] == {"value": 42} and job["events_seen"] >= 3  # started, progress, end
    assert (job["app"], job["function"]) == ("toolbox", "Doubler.double")


def test_failure_timeout_and_poller(hub: HubProcess) -> None:
    failing = submit(hub, "numerics", "count_primes", limit=1)
    hanging = submit(hub, "toolbox", "hang")
    silent = submit(hub, "toolbox", "plain_add", a=2, b=3)

    job = wait_until_finished(hub, failing)
    assert job["status"] == "failed" and job["error"]["type"].endswith("ValueError")
    assert "limit must be at least 2" in job["error"]["message"]

    job = wait_until_finished(hub, hanging)
    assert job["status"] == "timed_out" and job["completed_by"] == "webhook"

    job = wait_until_finished(hub, silent)
    assert job["status"] == "succeeded" and job["completed_by"] == "poller"
    assert job["result"] == {"value": 5}


def test_cancel_is_final_and_idempotent(hub: HubProcess) -> None:
    submitted = submit(hub, "toolbox", "wait_for_cancel")
    url = f"{hub.url}/api/v3/jobs/{submitted['job_id']}/cancel"
    first = httpx.post(url, headers=AUTH, timeout=30)
    again = httpx.post(url, headers=AUTH, timeout=30)
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert again.json()["status"] == "cancelled" and again.json()["completed_by"] == "operator"
    # The poller later sees the call ended: the job stays cancelled.
    time.sleep(1.5)  # three poll intervals pass; nothing may change the job
    assert httpx.get(submitted["status_url"], headers=AUTH).json()["status"] == "cancelled"


def test_unknown_function_is_a_clear_4xx(hub: HubProcess) -> None:
    body = {"app": "numerics", "function": "count_ghosts"}
    response = httpx.post(f"{hub.url}/api/v3/jobs", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 404
    assert (
        "count_ghosts" in response.json()["detail"]
        and "numerics/count_primes" in response.json()["detail"]
    )


def test_batch_completes_with_its_last_job_and_writes_a_manifest(hub: HubProcess) -> None:
    body = {
        "batch_id": "batch-e2e",
        "metadata": {"owner": "ml-platform"},
        "jobs": [
            {"app": "numerics", "function": "count_primes", "kwargs": {"limit": 10_000}},
            {"app": "numerics", "function": "count_primes", "kwargs": {"limit": 100_000}},
            {"app": "numerics", "function": "no_such_function"},
        ],
    }
    response = httpx.post(f"{hub.url}/api/v3/batches", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["total"] == 3 and len(submitted["jobs"]) == 3
    again = httpx.post(f"{hub.url}/api/v3/batches", json=body, headers=AUTH, timeout=60)
    assert again.status_code == 409

    deadline = time.monotonic() + 60
    while True:
        batch = httpx.get(submitted["status_url"], headers=AUTH).json()
        if batch["complete"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert batch["complete"], batch
    assert batch["counts"] == {"succeeded": 2, "failed": 1} and batch["finished"] == 3
    manifest = json.loads(Path(urlparse(batch["manifest_uri"]).path).read_text())
    assert manifest["metadata"] == {"owner": "ml-platform"}
    by_function = {(job["function"], job["status"]) for job in manifest["jobs"]}
    assert by_function == {
        ("count_primes", "succeeded"),
        ("no_such_function", "failed"),
    }
    primes = sorted(job["result"]["primes"] for job in manifest["jobs"] if job["result"])
    assert primes == [1_229, 9_592]
    listed = httpx.get(batch["jobs_url"], headers=AUTH).json()["jobs"]
    assert len(listed) == 3
