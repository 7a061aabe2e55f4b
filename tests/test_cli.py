"""The modalhub command as an operator uses it: clear errors, signatures that verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modalhub_sdk.signing import Verifier
from tests.helpers import SECRET


def modalhub(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODALHUB_", "MODAL_"))}
    return subprocess.run(
        [sys.executable, "-m", "modalhub", *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_sign_prints_headers_that_verify(tmp_path: Path) -> None:
    body = tmp_path / "event.json"
    body.write_bytes(b'{"type": "function.success", "call_id": "fc-1"}')
    result = modalhub("sign", "--body-file", str(body), "--secret", SECRET, "--format", "json")
    assert result.returncode == 0, result.stderr
    headers = json.loads(result.stdout)
    verified = Verifier([SECRET]).verify(body.read_bytes(), headers)
    assert verified.event_id == headers["webhook-id"]


def test_sign_modal_scheme_from_env_and_stdin() -> None:
    raw = b'{"call_id": "c", "status": "success"}'
    result = modalhub(
        "sign",
        "--body-file",
        "-",
        "--scheme",
        "modal",
        env={"MODAL_WEBHOOK_SECRET": "plain-secret-value"},
        stdin=raw,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.decode().splitlines())
    assert lines["X-Modal-Signature"].startswith("sha256=")
    assert Verifier(["plain-secret-value"]).verify(raw, lines).scheme == "modal"


def test_sign_curl_line_is_complete(tmp_path: Path) -> None:
    body = tmp_path / "e.json"
    body.write_text("{}")
    result = modalhub(
        "sign",
        "--body-file",
        str(body),
        "--secret",
        SECRET,
        "--format",
        "curl",
        "--url",
        "http://hub.test/x",
    )
    line = result.stdout.decode()
    assert line.startswith("curl ") and "webhook-signature: v1," in line and f"@{body}" in line


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = modalhub("sign", "--body-file", str(tmp_path / "nope.json"), "--secret", "s")
    assert missing.returncode == 2
    assert b"cannot read body" in missing.stderr and b"Traceback" not in missing.stderr

    (tmp_path / "bad.json").write_text("{nope")
    bad = modalhub("sign", "--body-file", str(tmp_path / "bad.json"), "--secret", "s")
    assert bad.returncode == 2 and b"not valid JSON" in bad.stderr

    no_secret = modalhub("serve", "--port", "1", cwd=tmp_path)
    assert no_secret.returncode == 2
    assert b"MODAL_WEBHOOK_SECRET" in no_secret.stderr and b"Traceback" not in no_secret.stderr

    placeholder = modalhub(
        "serve", env={"MODAL_WEBHOOK_SECRET": "your-webhook-secret-here"}, cwd=tmp_path
    )
    assert placeholder.returncode == 2 and b"placeholder" in placeholder.stderr

    bad_backend = modalhub(
        "serve", env={"MODAL_WEBHOOK_SECRET": "x" * 32, "MODALHUB_STORE": "mongodb"}, cwd=tmp_path
    )
    assert bad_backend.returncode == 2 and b"store" in bad_backend.stderr


def test_dev_prints_a_curl_line_that_works(tmp_path: Path) -> None:
    import shlex
    import time

    import httpx

    from tests.helpers import free_port

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODALHUB_", "MODAL_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modalhub", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(12)]
        curl = next(line.strip() for line in banner if line.strip().startswith("curl -sS -X POST"))
        read = next(line.strip() for line in banner if "Authorization: Bearer" in line)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        sent = subprocess.run(shlex.split(curl), cwd=tmp_path, capture_output=True, timeout=10)
        assert json.loads(sent.stdout)["status"] == "accepted"
        for _ in range(200):  # the job appears once processing (after the ack) ran
            job = json.loads(subprocess.run(shlex.split(read), capture_output=True).stdout)
            if job.get("status") == "succeeded":
                break
            time.sleep(0.02)
        assert job["status"] == "succeeded" and job["result"]["affinity"] == 0.63
        assert (tmp_path / ".modalhub" / "dev-secret").read_text().startswith("whsec_")
        notify = (tmp_path / ".modalhub" / "dev-notify-secret").read_text().strip()
        assert notify.startswith("whsec_") and any(notify in line for line in banner)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


def test_production_backends_need_their_settings(tmp_path: Path) -> None:
    base = {"MODAL_WEBHOOK_SECRET": "x" * 32}
    no_project = modalhub("serve", env=base | {"MODALHUB_STORE": "firestore"}, cwd=tmp_path)
    assert no_project.returncode == 2 and b"MODALHUB_GCP_PROJECT" in no_project.stderr
    no_bucket = modalhub("serve", env=base | {"MODALHUB_BLOBS": "gcs"}, cwd=tmp_path)
    assert no_bucket.returncode == 2 and b"MODALHUB_GCS_BUCKET" in no_bucket.stderr
