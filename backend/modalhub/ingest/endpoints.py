"""POST /api/v3/webhooks/modal/completion: every lifecycle callback of a Modal function."""

from __future__ import annotations

import json
import time

from fastapi import HTTPException, Request, Response, status
from pydantic import ValidationError

from modalhub import metrics
from modalhub.ingest.schemas import CallbackEvent
from modalhub.ingest.verification import reject, verified_callback
from modalhub.storage.models import InboxEntry
from modalhub.storage.protocols import StoreUnavailableError

CALLBACK_PATH = "/api/v3/webhooks/modal/completion"


def _validation_detail(exc: ValidationError) -> list[dict[str, object]]:
    # Field locations and messages only: the offending input may carry job data.
    return [{"loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors()[:20]]


async def receive_callback(request: Request) -> Response:
    """The hot path, mounted as a plain Starlette route: FastAPI's per-request dependency
    and serialisation machinery cost more here than verifying and storing the callback
    (measured in docs/benchmarks.md). HTTPExceptions still render through the app's
    handlers as ``{"detail": ...}``."""
    started = time.perf_counter()
    callback = await verified_callback(request)
    hub = callback.hub
    try:
        event = CallbackEvent.model_validate_json(callback.body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise reject(status.HTTP_400_BAD_REQUEST, "body is not valid JSON") from None
        metrics.WEBHOOKS_RECEIVED.labels("422").inc()
        raise HTTPException(422, _validation_detail(exc)) from None

    # The seed's header scheme does not sign X-Modal-Webhook-Id: an id taken from it could
    # be changed on a captured request to get past deduplication. Derive it from the
    # signed body instead. Standard Webhooks signs its id.
    webhook = callback.webhook
    event_id = (
        webhook.event_id
        if webhook.scheme == "standard" and webhook.event_id
        else event.derived_event_id()
    )
    entry = InboxEntry(
        event_id=event_id,
        call_id=event.call_id,
        type=event.type.value,
        body=callback.body,
        signed_at=webhook.timestamp,
        received_at=time.time(),
    )
    try:
        created = await hub.store.put_inbox(entry)
    except StoreUnavailableError:
        metrics.WEBHOOKS_RECEIVED.labels("503").inc()
        raise  # the app's handler answers 503 with Retry-After
    metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
    if not created:
        metrics.RECEIVED_DUPLICATE.inc()
        return _answer(b"duplicate", event_id, 200)
    metrics.RECEIVED_ACCEPTED.inc()
    if hub.processor is not None:
        hub.processor.notify()
    return _answer(b"accepted", event_id, 202)


def _answer(status_word: bytes, event_id: str, code: int) -> Response:
    # Two fixed keys: cheaper written out than through a JSON encoder on every callback.
    body = b'{"status":"' + status_word + b'","event_id":' + json.dumps(event_id).encode() + b"}"
    return Response(body, status_code=code, media_type="application/json")


# The route bypasses FastAPI's routing, so its OpenAPI entry is written out here.
OPENAPI_PATH = {
    "post": {
        "tags": ["callbacks"],
        "summary": "Receive a signed lifecycle callback from a Modal function",
        "operationId": "receive_callback",
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
            for name in (
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "X-Modal-Signature",
                "X-Modal-Timestamp",
            )
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CallbackEvent"}}
            },
        },
        "responses": {
            "202": {"description": "Stored durably; processing is scheduled"},
            "200": {"description": "Duplicate event id: already stored, not processed again"},
            "400": {"description": "Missing or malformed headers, or a body that is not JSON"},
            "401": {"description": "Bad signature or timestamp outside the tolerance"},
            "413": {"description": "Body larger than MODALHUB_MAX_BODY_BYTES"},
            "415": {"description": "Content-Type is not JSON"},
            "422": {"description": "Signed, but not a valid event"},
            "503": {"description": "Store unavailable: nothing stored; retry after Retry-After"},
        },
    }
}
