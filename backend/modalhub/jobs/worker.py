"""`modalhub worker`: apply inbox entries in a process of its own.

`modalhub serve` starts one (MODALHUB_PROCESSOR=worker, the default) so the API process
spends its core on ingestion; on Kubernetes it can run as a Deployment of its own
(MODALHUB_PROCESSOR=external on the API pods). Entries are found by polling the inbox,
so no signal from the API is needed and any number of workers may run at once. The
worker also sends the notifications of jobs that ended (notifications/notifier.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import prometheus_client
import structlog

from modalhub.config import Settings
from modalhub.jobs.processing import EventProcessor
from modalhub.logging import configure_logging
from modalhub.notifications.notifier import build_notifier
from modalhub.storage.factory import build_blob_store, build_job_store

log = structlog.get_logger(__name__)


async def run_worker(settings: Settings, *, parent_pid: int | None = None) -> None:
    if settings.worker_metrics_port is not None:
        # A thread of its own, serving the default registry at any path (/metrics).
        prometheus_client.start_http_server(settings.worker_metrics_port)
    store, blobs = build_job_store(settings), build_blob_store(settings)
    await store.open()
    await blobs.open()
    notifier = build_notifier(settings, store, blobs)
    processor = EventProcessor(
        store,
        blobs,
        batch_size=settings.process_batch_size,
        sweep_interval=settings.worker_poll_seconds,
        gather_seconds=0.0,
        on_notification_due=notifier.wake,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [
        asyncio.create_task(processor.run_forever(), name="processor"),
        asyncio.create_task(notifier.run_forever(), name="notifier"),
    ]
    log.info(
        "worker started",
        poll_seconds=settings.worker_poll_seconds,
        parent_pid=parent_pid,
        metrics_port=settings.worker_metrics_port,
    )
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # not wait_for: see processing.py
                    await stop.wait()
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("parent hub process is gone; worker exits")
                break
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await blobs.close()
        await store.close()
        log.info("worker stopped")


def main(settings: Settings, *, parent_pid: int | None = None) -> None:
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    asyncio.run(run_worker(settings, parent_pid=parent_pid))
