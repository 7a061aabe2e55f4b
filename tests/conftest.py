from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from modalhub.app import create_app
from modalhub.config import Settings
from modalhub.hub import Hub
from tests.emulators import FakeGcsServer, FirestoreEmulator
from tests.helpers import ADMIN_TOKEN, SECRET


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        webhook_secrets=[SECRET],
        admin_tokens=[ADMIN_TOKEN],
        log_format="json",
        sweep_interval_seconds=0.2,
        processor="inline",
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def hub(app: FastAPI) -> Hub:
    hub: Hub = app.state.hub
    return hub


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        yield http


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    emulator = FirestoreEmulator(tmp_path_factory.mktemp("firestore"))
    emulator.start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator
    finally:
        emulator.stop()
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    emulator = FakeGcsServer(tmp_path_factory.mktemp("gcs"))
    emulator.start()
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://{emulator.host}"
    try:
        yield emulator
    finally:
        emulator.stop()
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
