"""Build the configured executor."""

from __future__ import annotations

from modalhub.config import Settings
from modalhub.executions.protocols import Executor


def build_executor(settings: Settings) -> Executor:
    if settings.executor == "modal":
        from modalhub.executions.modal_executor import ModalExecutor

        return ModalExecutor()
    from modalhub.executions.local import LocalExecutor

    hub_url = settings.webhook_base_url or "http://127.0.0.1:8000"
    return LocalExecutor(settings.local_apps, hub_url=hub_url, secrets=settings.webhook_secrets)
