"""The baseline for bench/ingest.py: a FastAPI endpoint that only answers 200.

Served by the same uvicorn settings as the hub, so the ratio isolates what durable,
verified ingestion costs on top of the framework and the HTTP server.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/api/v3/webhooks/modal/completion")
    async def accept() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": True})

    return app
