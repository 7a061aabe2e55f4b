"""One attempt to tell a subscriber that a job ended, or a batch completed: a signed POST
to its notify_url.

The request is a Standard Webhooks message (``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` over ``id.timestamp.body``), so a receiver verifies it with the
``standardwebhooks`` or ``svix`` library and the hub's notify secret. The body:

    {"type": "job.succeeded", "timestamp": "2026-01-15T10:30:00Z", "data": {<the job>}}
    {"type": "batch.completed", "timestamp": ..., "data": {<the batch, with manifest_uri>}}
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from modalhub import __version__
from modalhub.notifications.outbox import AttemptResult
from modalhub.storage.models import Batch, Job, batch_to_dict, job_to_dict
from modalhub_sdk.signing import sign_standard

_MAX_ERROR_TEXT = 300


def notification_id(subject: Job | Batch) -> str:
    """The same for every attempt, so receivers can drop repeats; the prefixes keep a
    job's and a batch's ids apart whatever ids they were given."""
    if isinstance(subject, Job):
        return f"ntf_job_{subject.job_id}"
    return f"ntf_batch_{subject.batch_id}"


def notification_body(subject: Job | Batch) -> bytes:
    if isinstance(subject, Job):
        kind, record = f"job.{subject.status.value}", job_to_dict(subject)
        ended = subject.finished_at or subject.updated_at
    else:
        kind, record = "batch.completed", batch_to_dict(subject)
        ended = subject.completed_at or subject.created_at
    record.pop("notification")  # the outbox's own bookkeeping, and the URL
    message: dict[str, Any] = {
        "type": kind,
        "timestamp": datetime.fromtimestamp(ended, UTC).isoformat().replace("+00:00", "Z"),
        "data": record,
    }
    return json.dumps(message, separators=(",", ":"), default=repr).encode()


async def deliver(
    client: httpx.AsyncClient, subject: Job | Batch, keys: Sequence[bytes]
) -> AttemptResult:
    """One POST; the caller bounds its total time (the client's timeouts are per phase)."""
    assert subject.notification is not None
    body = notification_body(subject)
    headers = {
        **sign_standard(body, keys, event_id=notification_id(subject)),
        "content-type": "application/json",
        "user-agent": f"modalhub/{__version__}",
    }
    url = subject.notification.url
    try:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            # Only the start of an error body is kept (shown on the record): never read
            # more of what a receiver sends than that.
            excerpt = b"" if response.is_success else await _head(response)
    except httpx.HTTPError as exc:  # refused, reset, timed out, bad URL at connect time
        return AttemptResult(delivered=False, error=_clip(f"{type(exc).__name__}: {exc}"))
    if response.is_success:
        return AttemptResult(delivered=True)
    text = excerpt.decode("utf-8", "replace").strip()
    error = _clip(f"HTTP {response.status_code}: {text}".rstrip(": "))
    if response.status_code == 410:  # Gone: the receiver asks us to stop
        return AttemptResult(delivered=False, error=error, permanent=True)
    return AttemptResult(delivered=False, error=error, retry_after=_retry_after(response))


async def _head(response: httpx.Response) -> bytes:
    head = b""
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) >= _MAX_ERROR_TEXT:
            break
    return head[:_MAX_ERROR_TEXT]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."
