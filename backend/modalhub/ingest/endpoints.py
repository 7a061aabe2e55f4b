"""POST /api/v3/webhooks/modal/completion: every lifecycle callback of a Modal function."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from modalhub import metrics
from modalhub.ingest.schemas import CallbackEvent
from modalhub.ingest.verification import VerifiedCallbackDep, reject
from modalhub.storage.models import InboxEntry
from modalhub.storage.protocols import StoreUnavailableError

router = APIRouter(tags=["callbacks"])

CALLBACK_PATH = "/api/v3/webhooks/modal/completion"
RETRY_AFTER_SECONDS = "5"


def _validation_detail(exc: ValidationError) -> list[dict[str, object]]:
    # Field locations and messages only: the offending input may carry job data.
    return [{"loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors()[:20]]


@router.post(
    CALLBACK_PATH,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"description": "Duplicate event id: already stored, not processed again"},
        400: {"description": "Missing or malformed headers, or a body that is not JSON"},
        401: {"description": "Bad signature or timestamp outside the tolerance"},
        413: {"description": "Body larger than MODALHUB_MAX_BODY_BYTES"},
        415: {"description": "Content-Type is not JSON"},
        422: {"description": "Signed, but not a valid event"},
        503: {"description": "Store unavailable: nothing was stored, retry after Retry-After"},
    },
)
async def receive_callback(callback: VerifiedCallbackDep) -> JSONResponse:
    hub = callback.hub
    started = time.perf_counter()
    try:
        event = CallbackEvent.model_validate_json(callback.body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise reject(status.HTTP_400_BAD_REQUEST, "body is not valid JSON") from None
        metrics.WEBHOOKS_RECEIVED.labels("422").inc()
        raise HTTPException(422, _validation_detail(exc)) from None

    event_id = callback.webhook.event_id or event.derived_event_id()
    entry = InboxEntry(
        event_id=event_id,
        call_id=event.call_id,
        type=event.type.value,
        body=callback.body,
        signed_at=callback.webhook.timestamp,
        received_at=time.time(),
    )
    try:
        created = await hub.store.put_inbox(entry)
    except StoreUnavailableError:
        metrics.WEBHOOKS_RECEIVED.labels("503").inc()
        return JSONResponse(
            {"detail": "store unavailable; nothing was stored, retry later"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
    if not created:
        metrics.WEBHOOKS_RECEIVED.labels("duplicate").inc()
        return JSONResponse({"status": "duplicate", "event_id": event_id}, status_code=200)
    metrics.WEBHOOKS_RECEIVED.labels("accepted").inc()
    hub.processor.notify()
    return JSONResponse({"status": "accepted", "event_id": event_id}, status_code=202)
