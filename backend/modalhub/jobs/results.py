"""Write a success event's result to the blob store, create-only.

Small top-level scalars stay on the job; the full result goes to
``results/{job_id}/result.json``, and each ``*_base64`` field is decoded into its own
blob (``results/{job_id}/{name}``) and replaced in result.json by that blob's URI.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import structlog

from modalhub.jobs.state import StoredResult
from modalhub.storage.protocols import BlobStore

log = structlog.get_logger(__name__)

BASE64_SUFFIX = "_base64"
MAX_SUMMARY_KEYS = 50
MAX_SUMMARY_STRING = 256


def summarize(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, dict):
        return {"value": result} if _is_small_scalar(result) else None
    summary = {
        key: value
        for key, value in result.items()
        if not key.endswith(BASE64_SUFFIX) and _is_small_scalar(value)
    }
    return dict(list(summary.items())[:MAX_SUMMARY_KEYS])


def _is_small_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_SUMMARY_STRING
    return value is None or isinstance(value, bool | int | float)


async def store_result(blobs: BlobStore, *, job_id: str, result: Any) -> StoredResult:
    prefix = f"results/{job_id}"
    uris: dict[str, str] = {}
    document = result
    if isinstance(result, dict):
        document = dict(result)
        for key, value in result.items():
            if not (key.endswith(BASE64_SUFFIX) and isinstance(value, str)):
                continue
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                log.warning(
                    "result field is not valid base64; kept as text", job_id=job_id, field=key
                )
                continue
            name = key.removesuffix(BASE64_SUFFIX)
            ref = await blobs.put_if_absent(
                f"{prefix}/{name}", data, content_type="application/octet-stream"
            )
            uris[name] = ref.uri
            document[key] = ref.uri
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    ref = await blobs.put_if_absent(f"{prefix}/result.json", body, content_type="application/json")
    uris["result.json"] = ref.uri
    return StoredResult(summary=summarize(result), uris=uris)
