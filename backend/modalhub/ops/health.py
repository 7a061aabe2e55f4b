"""Liveness, readiness and the seed's webhook health report, from real checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modalhub import metrics
from modalhub.hub import Hub, HubDep

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_SECONDS = 2.0


async def _check(probe: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await probe()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def backend_checks(hub: Hub) -> dict[str, dict[str, Any]]:
    store, blobs = await asyncio.gather(_check(hub.store.ping), _check(hub.blobs.ping))
    return {
        "store": {"backend": hub.settings.store.value, **store},
        "blobs": {"backend": hub.settings.blobs.value, **blobs},
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(hub: HubDep) -> JSONResponse:
    checks = await backend_checks(hub)
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"ready": ready, "checks": checks},
        status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
    )


@router.get("/api/v3/webhooks/modal/health")
async def webhook_health(hub: HubDep) -> JSONResponse:
    checks = await backend_checks(hub)
    inbox: dict[str, Any] = {"pending": None, "oldest_age_seconds": None}
    notifications: dict[str, Any] = {"most_overdue_seconds": None}
    processing_ok = notifying_ok = False
    if checks["store"]["ok"]:
        now = time.time()
        backlog, due = await asyncio.gather(hub.store.inbox_backlog(), _oldest_due(hub, now))
        age = now - backlog.oldest_received_at if backlog.oldest_received_at else 0.0
        inbox = {"pending": backlog.pending, "oldest_age_seconds": round(age, 3)}
        # Processing is judged by what it leaves behind, wherever it runs (this process,
        # a worker process, another replica): nothing waits longer than the stall limit.
        processing_ok = age <= hub.settings.processing_stall_seconds
        # Likewise notifications: one due long ago means no notifier is sending (a
        # subscriber that refuses is retried later, so it does not count here).
        overdue = now - due if due is not None else 0.0
        notifications = {"most_overdue_seconds": round(overdue, 3)}
        notifying_ok = overdue <= hub.settings.processing_stall_seconds
    healthy = (
        all(check["ok"] for check in checks.values())
        and hub.verifier is not None
        and processing_ok
        and notifying_ok
    )
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "service": "modal_webhook_handler",
        "features": {
            "hmac_verification": hub.verifier is not None,
            "timestamp_verification": hub.verifier is not None,
            "background_processing": processing_ok,
            "batch_intelligence": True,  # batches counted with their jobs, with manifests
            "notifications": notifying_ok,
        },
        "checks": {
            **checks,
            "inbox": inbox,
            "notifications": notifications,
            "processor": hub.settings.processor,
            "secrets_configured": len(hub.settings.webhook_secrets),
            "signature_tolerance_seconds": hub.settings.signature_tolerance_seconds,
        },
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


async def _oldest_due(hub: Hub, now: float) -> float | None:
    due = await hub.store.due_notifications(now=now, limit=1)
    return due[0].notify_due_at if due else None


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(hub: HubDep) -> Response:
    # The backlog is counted when scraped, not on every processing round.
    with contextlib.suppress(Exception):
        metrics.INBOX_BACKLOG.set((await hub.store.inbox_backlog()).pending)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
