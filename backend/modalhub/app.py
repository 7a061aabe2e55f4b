"""The FastAPI application: ``create_app()`` and the lifespan that builds shared parts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from modalhub import __version__
from modalhub.config import Settings
from modalhub.executions.factory import build_executor
from modalhub.executions.protocols import ExecutorUnavailableError, UnknownFunctionError
from modalhub.hub import Hub
from modalhub.ingest import endpoints as ingest
from modalhub.ingest.schemas import CallbackEvent
from modalhub.jobs.endpoints import router as jobs_router
from modalhub.jobs.poller import run_poller
from modalhub.jobs.processing import build_processor
from modalhub.logging import configure_logging
from modalhub.notifications.endpoints import router as notifications_router
from modalhub.notifications.notifier import build_notifier
from modalhub.ops.health import router as ops_router
from modalhub.storage.factory import build_blob_store, build_job_store
from modalhub.storage.protocols import StoreUnavailableError
from modalhub_sdk.signing import Verifier

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = "5"  # how soon a sender should retry after a 503


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inline = settings.processor == "inline"
        store = build_job_store(settings, applies_inbox=inline)
        blobs = build_blob_store(settings)
        await store.open()
        await blobs.open()
        notifier = build_notifier(settings, store, blobs)
        processor = build_processor(settings, store, blobs, on_notification_due=notifier.wake)
        verifier = (
            Verifier(settings.signing_keys, tolerance=settings.signature_tolerance_seconds)
            if settings.webhook_secrets
            else None
        )
        if verifier is None:
            log.warning("no webhook secret configured: every callback will be refused")
        executor = build_executor(settings)
        await executor.open()
        hub = Hub(settings, store, blobs, processor if inline else None, verifier, executor)
        app.state.hub = hub
        # Inline, the first round runs at once: the start-up sweep of what a crash left.
        tasks = [asyncio.create_task(run_poller(hub), name="poller")]
        if inline:
            tasks.append(asyncio.create_task(processor.run_forever(), name="processor"))
            tasks.append(asyncio.create_task(notifier.run_forever(), name="notifier"))
        # Objects alive now (modules, settings, clients) live as long as the process:
        # keep them out of every collection, and collect young objects less often. A
        # full collection over them was a visible share of the ingest p99.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        log.info(
            "hub started",
            store=settings.store.value,
            blobs=settings.blobs.value,
            processor=settings.processor,
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await executor.close()
            await blobs.close()
            await store.close()

    app = FastAPI(title="modalhub", version=__version__, lifespan=lifespan)
    app.add_route(ingest.CALLBACK_PATH, ingest.receive_callback, methods=["POST"])
    app.include_router(jobs_router)
    app.include_router(notifications_router)
    app.include_router(ops_router)

    @app.exception_handler(UnknownFunctionError)
    async def unknown_function(_: Request, exc: UnknownFunctionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ExecutorUnavailableError)
    async def executor_unavailable(_: Request, exc: ExecutorUnavailableError) -> JSONResponse:
        log.warning("executor unavailable", error=str(exc))
        return JSONResponse(
            {"detail": f"executor unavailable, retry later: {exc}"},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    @app.exception_handler(StoreUnavailableError)
    async def store_unavailable(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        log.warning("store unavailable", error=str(exc))
        return JSONResponse(
            {"detail": "store unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema["paths"][ingest.CALLBACK_PATH] = ingest.OPENAPI_PATH
            event = CallbackEvent.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(event.pop("$defs", {}))
            components["CallbackEvent"] = event
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
