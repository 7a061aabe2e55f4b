"""structlog set-up: JSON in production, readable on a terminal; secrets never logged."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values must never reach a log line: credentials and job payloads.
REDACTED_KEYS = frozenset(
    {
        "authorization",
        "body",
        "headers",
        "result",
        "secret",
        "secrets",
        "signature",
        "token",
        "webhook-signature",
        "x-modal-signature",
        "webhook_secrets",
        "admin_tokens",
    }
)
REDACTED = "[redacted]"


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event_dict:
        if key.lower() in REDACTED_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(*, fmt: str = "auto", level: str = "info") -> None:
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # The hub's own records bypass the standard library (the bridge costs several
    # times more per line); uvicorn's records are rendered by the same processors below.
    structlog.configure(
        processors=[
            *shared,
            *([structlog.processors.format_exc_info] if json_output else []),
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        cache_logger_on_first_use=True,
    )
    # Route the standard library's records (uvicorn's included) through the same pipeline.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if json_output else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn turns propagation off for its access log when --access-log is not given.
    logging.getLogger("uvicorn.access").handlers[:] = []


class _CurrentStderr:
    """Whatever sys.stderr is at write time (test runners and daemons replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
