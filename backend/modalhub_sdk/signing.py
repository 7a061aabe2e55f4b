"""Sign and verify modalhub webhook callbacks (see DESIGN.md, "Wire contract").

Two schemes share one secret format:

* ``standard`` (primary), as Standard Webhooks / svix: ``webhook-id``, ``webhook-timestamp``
  and ``webhook-signature: v1,<base64 HMAC-SHA256(key, f"{id}.{ts}." + body)>`` (space-separated
  list, one entry per active secret).
* ``modal`` (the seed's headers): ``X-Modal-Timestamp`` and
  ``X-Modal-Signature: sha256=<hex HMAC-SHA256(key, f"{ts}." + body)>``; with several secrets
  the value is a space-separated list ``sha256=<hex1> sha256=<hex2>`` and any entry may match.
  ``X-Modal-Webhook-Id`` is optional and NOT covered by the signature (the format predates
  it), so the hub must not rely on it alone to stop replays.

Secrets: ``whsec_<base64>`` is base64-decoded as in Standard Webhooks; any other string is used
as its UTF-8 bytes. Stdlib only, importable on Python 3.9+, because senders run this inside Modal
containers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
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

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300

# Bounds keep hostile input cheap to reject before any HMAC work.
MAX_ID_LENGTH = 256
MAX_SIGNATURE_HEADER_LENGTH = 4096
MAX_SIGNATURES = 16
MAX_TIMESTAMP_DIGITS = 12

_B64_SIG_LENGTH = 44  # base64 of a 32-byte SHA-256 MAC, padded
_HEX_SIG_LENGTH = 64


class WebhookVerificationError(Exception):
    """Base class; ``str(exc)`` is a short message safe to return to the sender."""

    http_status = 400
    default_message = "webhook verification failed"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class MissingHeaderError(WebhookVerificationError):
    http_status = 400
    default_message = "missing webhook signature headers"


class MalformedHeaderError(WebhookVerificationError):
    http_status = 400
    default_message = "malformed webhook signature headers"


class InvalidSignatureError(WebhookVerificationError):
    http_status = 401
    default_message = "no matching signature"


class TimestampOutOfToleranceError(WebhookVerificationError):
    http_status = 401
    default_message = "webhook timestamp out of tolerance"


def parse_secret(secret: str | bytes) -> bytes:
    """Return the HMAC key for one secret; raise ValueError if empty or undecodable."""
    if isinstance(secret, bytes):
        if not secret:
            raise ValueError("webhook secret is empty")
        return secret
    text = secret.strip()  # env files often leave a trailing newline
    if not text:
        raise ValueError("webhook secret is empty")
    if not text.startswith(SECRET_PREFIX):
        return text.encode()
    encoded = text[len(SECRET_PREFIX) :]
    try:
        # Standard Webhooks senders sometimes strip the padding; restore it before validating.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret after 'whsec_' is not valid base64") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def parse_secrets(value: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    """Parse one or more secrets (rotation) into deduplicated keys, first occurrence first.

    A string may hold several secrets separated by whitespace and/or commas; bytes are one key;
    each item of an iterable is one secret.
    """
    items: Iterable[str | bytes]
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, bytes):
        items = [value]
    else:
        items = value
    keys = list(dict.fromkeys(parse_secret(item) for item in items))
    if not keys:
        raise ValueError("no webhook secret configured")
    return keys


@dataclass(frozen=True)
class VerifiedWebhook:
    # webhook-id or X-Modal-Webhook-Id; None for the modal scheme without an id header.
    event_id: str | None
    timestamp: int
    scheme: Literal["standard", "modal"]


def _now_ts(timestamp: int | None) -> int:
    return int(time.time()) if timestamp is None else int(timestamp)


def _check_event_id(event_id: str) -> None:
    # Mirror the verifier's limits so a sender fails loudly at sign time, not with a 400 later.
    if not event_id or len(event_id) > MAX_ID_LENGTH or not event_id.isascii():
        raise ValueError(f"event_id must be 1-{MAX_ID_LENGTH} ASCII characters")


def _mac(key: bytes, *parts: bytes) -> hmac.HMAC:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac


def sign_standard(
    body: bytes,
    secrets: str | bytes | Iterable[str | bytes],
    *,
    event_id: str,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers, one ``v1`` entry per secret."""
    _check_event_id(event_id)
    ts = str(_now_ts(timestamp))
    prefix = f"{event_id}.{ts}.".encode()
    signature = " ".join(
        "v1," + base64.b64encode(_mac(key, prefix, body).digest()).decode()
        for key in parse_secrets(secrets)
    )
    return {"webhook-id": event_id, "webhook-timestamp": ts, "webhook-signature": signature}


def sign_modal(
    body: bytes,
    secrets: str | bytes | Iterable[str | bytes],
    *,
    timestamp: int | None = None,
    event_id: str | None = None,
) -> dict[str, str]:
    """Seed-style ``X-Modal-*`` headers; several secrets give ``sha256=<hex1> sha256=<hex2>``."""
    ts = str(_now_ts(timestamp))
    prefix = f"{ts}.".encode()
    signature = " ".join(
        "sha256=" + _mac(key, prefix, body).hexdigest() for key in parse_secrets(secrets)
    )
    headers = {"X-Modal-Signature": signature, "X-Modal-Timestamp": ts}
    if event_id is not None:
        _check_event_id(event_id)
        headers["X-Modal-Webhook-Id"] = event_id
    return headers


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup; ``name`` is lowercase. An empty value counts as absent."""
    value = headers.get(name)
    if value is None:
        # Starlette Headers already match case-insensitively; plain dicts may not, so scan only
        # on a miss to keep the common path a single lookup.
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    return value or None


def _split_signatures(header: str) -> list[str]:
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        raise MalformedHeaderError("signature header too long")
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise MalformedHeaderError("too many signatures")
    return entries


def _decode_b64_sig(value: str) -> bytes:
    # Exactly 44 canonical characters -> 32 bytes; validate=True rejects stray characters.
    if len(value) == _B64_SIG_LENGTH:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise MalformedHeaderError("signature is not base64 of a SHA-256 MAC")


def _decode_hex_sig(value: str) -> bytes:
    if len(value) == _HEX_SIG_LENGTH:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise MalformedHeaderError("signature is not hex of a SHA-256 MAC")


class Verifier:
    """Verify callbacks against one or more active secrets.

    ``verify`` uses the standard scheme when ``webhook-signature`` is present, else the modal
    scheme when ``X-Modal-Signature`` is present. Errors map to HTTP via ``exc.http_status``:
    missing/malformed headers (including a signature header with no ``v1``/``sha256`` entry,
    i.e. nothing this verifier understands) are 400; a wrong signature or a timestamp outside
    ``tolerance`` seconds, in either direction, is 401.
    """

    __slots__ = ("_macs", "tolerance")

    def __init__(
        self, secrets: str | bytes | Iterable[str | bytes], *, tolerance: int = DEFAULT_TOLERANCE
    ) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        self.tolerance = tolerance
        # Keyed HMAC objects are copied per call, which skips re-deriving the key pads.
        self._macs = tuple(
            hmac.new(key, digestmod=hashlib.sha256) for key in parse_secrets(secrets)
        )

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> VerifiedWebhook:
        signature = _header(headers, "webhook-signature")
        if signature is not None:
            event_id = _header(headers, "webhook-id")
            if event_id is None:
                raise MissingHeaderError("missing webhook-id header")
            raw_ts = _header(headers, "webhook-timestamp")
            if raw_ts is None:
                raise MissingHeaderError("missing webhook-timestamp header")
            if len(event_id) > MAX_ID_LENGTH:
                raise MalformedHeaderError("webhook-id too long")
            # Other versions (e.g. v1a, asymmetric) are skipped, as Standard Webhooks does.
            presented = [
                _decode_b64_sig(entry[3:])
                for entry in _split_signatures(signature)
                if entry.startswith("v1,")
            ]
            if not presented:
                raise MalformedHeaderError("no v1 signature in webhook-signature")
            prefix = f"{event_id}.{raw_ts}.".encode()
            scheme: Literal["standard", "modal"] = "standard"
        else:
            signature = _header(headers, "x-modal-signature")
            if signature is None:
                raise MissingHeaderError("missing webhook-signature or X-Modal-Signature header")
            raw_ts = _header(headers, "x-modal-timestamp")
            if raw_ts is None:
                raise MissingHeaderError("missing X-Modal-Timestamp header")
            event_id = _header(headers, "x-modal-webhook-id")
            if event_id is not None and len(event_id) > MAX_ID_LENGTH:
                raise MalformedHeaderError("X-Modal-Webhook-Id too long")
            presented = [
                _decode_hex_sig(entry[7:])
                for entry in _split_signatures(signature)
                if entry.startswith("sha256=")
            ]
            if not presented:
                raise MalformedHeaderError("no sha256= signature in X-Modal-Signature")
            prefix = f"{raw_ts}.".encode()
            scheme = "modal"

        # ASCII digits only: int() would also take "+1", " 1", "1_0" and non-ASCII digits.
        if len(raw_ts) > MAX_TIMESTAMP_DIGITS or not (raw_ts.isascii() and raw_ts.isdigit()):
            raise MalformedHeaderError("timestamp must be unix seconds")
        ts = int(raw_ts)
        if abs((time.time() if now is None else now) - ts) > self.tolerance:
            raise TimestampOutOfToleranceError()

        # The prefix holds the timestamp header text exactly as sent, so changing it (or the id)
        # changes the MAC. Stopping at the first match only reveals which secret matched, which
        # a caller holding a valid signature learns anyway.
        for base in self._macs:
            mac = base.copy()
            mac.update(prefix)
            mac.update(body)
            expected = mac.digest()
            for candidate in presented:
                if hmac.compare_digest(expected, candidate):
                    return VerifiedWebhook(event_id, ts, scheme)
        raise InvalidSignatureError()
