"""The shared parts one hub process builds once at start-up (see app.lifespan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from modalhub.config import Settings
from modalhub.executions.protocols import Executor
from modalhub.jobs.processing import EventProcessor
from modalhub.storage.protocols import BlobStore, JobStore
from modalhub_sdk.signing import Verifier


@dataclass
class Hub:
    settings: Settings
    store: JobStore
    blobs: BlobStore
    processor: EventProcessor | None  # None when another process applies the inbox
    verifier: Verifier | None  # None when no secret is configured: every callback is refused
    executor: Executor


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]
