"""modalhub SDK: helpers for code that runs inside Modal functions (stdlib and httpx only).

``signing`` signs callbacks (sender side) and verifies them (hub side); ``reporter`` sends a
function's lifecycle to the hub (``@report_to_hub``, ``report_progress``, ``HubReporter``).
"""

from modalhub_sdk.reporter import HubReporter, report_progress, report_to_hub
from modalhub_sdk.signing import (
    InvalidSignatureError,
    MalformedHeaderError,
    MissingHeaderError,
    TimestampOutOfToleranceError,
    VerifiedWebhook,
    Verifier,
    WebhookVerificationError,
    parse_secret,
    parse_secrets,
    sign_modal,
    sign_standard,
)

__all__ = [
    "HubReporter",
    "InvalidSignatureError",
    "MalformedHeaderError",
    "MissingHeaderError",
    "TimestampOutOfToleranceError",
    "VerifiedWebhook",
    "Verifier",
    "WebhookVerificationError",
    "parse_secret",
    "parse_secrets",
    "report_progress",
    "report_to_hub",
    "sign_modal",
    "sign_standard",
]
