"""modalhub SDK: stdlib-only helpers for code that runs inside Modal functions.

``signing`` signs callbacks (sender side) and verifies them (hub side).
"""

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
    # signing
    "InvalidSignatureError",
    "MalformedHeaderError",
    "MissingHeaderError",
    "TimestampOutOfToleranceError",
    "VerifiedWebhook",
    "Verifier",
    "WebhookVerificationError",
    "parse_secret",
    "parse_secrets",
    "sign_modal",
    "sign_standard",
]
