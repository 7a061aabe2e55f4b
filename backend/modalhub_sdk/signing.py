"""Sign and verify modalhub webhook callbacks (DESIGN.md, "Wire contract").

Two schemes share one secret format:

* ``standard`` (primary), as Standard Webhooks / svix: ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256(key, f"{id}.{ts}." + body)>``, a space-separated
  list with one entry per active secret.
* ``modal`` (the seed's headers): ``X-Modal-Timestamp`` and
  ``X-Modal-Signature: sha256=<hex HMAC-SHA256(key, f"{ts}." + body)>``; with several secrets the
  value is a space-separated list ``sha256=<hex1> sha256=<hex2>`` and any entry may match.
  ``X-Modal-Webhook-Id`` is optional and NOT covered by the signature (the format predates it),
  so it cannot be trusted on its own to stop replays.

Secrets: ``whsec_<base64>`` is base64-decoded as in Standard Webhooks; any other string is used as
its UTF-8 bytes. Stdlib only, because senders run this inside Modal containers.
"""

import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
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

# Bounds keep hostile input cheap to reject, before any HMAC work.
MAX_ID_LENGTH = 256
MAX_SIGNATURE_HEADER_LENGTH = 4096
MAX_SIGNATURES = 16
MAX_TIMESTAMP_DIGITS = 12

_DIGEST_SIZE = hashlib.sha256().digest_size
_BLOCK_SIZE = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class WebhookVerificationError(Exception):
    """Base class. ``str(exc)`` is a short message safe to send back; ``http_status`` maps it."""

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
    """Return the HMAC key for one secret; ValueError if it is empty or not decodable."""
    if isinstance(secret, bytes):
        if not secret.strip():
            raise ValueError("webhook secret is empty")
        return secret
    text = secret.strip()  # env files often leave a trailing newline
    if not text:
        raise ValueError("webhook secret is empty")
    if not text.startswith(SECRET_PREFIX):
        return text.encode()
    encoded = text[len(SECRET_PREFIX) :]
    try:
        # Some senders strip the padding; restore it, then reject anything outside the alphabet.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret after 'whsec_' is not valid base64") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def parse_secrets(value: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    """Keys for one or more active secrets (rotation), deduplicated, first occurrence first.

    A string may hold several secrets separated by whitespace and/or commas; bytes are one key;
    each item of any other iterable is one secret.
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
    """What a successful ``Verifier.verify`` vouches for (plus the unsigned modal-scheme id)."""

    # webhook-id, or X-Modal-Webhook-Id, or None (modal scheme without id: the hub derives one).
    event_id: str | None
    timestamp: int
    scheme: Literal["standard", "modal"]


# --- signing (sender side; speed does not matter, so plain hmac.new) -------------------------


def _sign_prelude(
    secrets: str | bytes | Iterable[str | bytes], event_id: str | None, timestamp: int | None
) -> tuple[list[bytes], str]:
    # Mirror the verifier's limits so a sender fails loudly here, not with a 400 later.
    keys = parse_secrets(secrets)
    if len(keys) > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} secrets can sign one request")
    if event_id is not None and (
        not event_id or len(event_id) > MAX_ID_LENGTH or not event_id.isascii()
    ):
        raise ValueError(f"event_id must be 1-{MAX_ID_LENGTH} ASCII characters")
    ts = int(time.time()) if timestamp is None else int(timestamp)
    if ts < 0:
        raise ValueError("timestamp must be >= 0")
    return keys, str(ts)


def sign_standard(
    body: bytes,
    secrets: str | bytes | Iterable[str | bytes],
    *,
    event_id: str,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, one ``v1`` entry per secret."""
    keys, ts = _sign_prelude(secrets, event_id, timestamp)
    msg = f"{event_id}.{ts}.".encode() + body
    signature = " ".join(
        "v1," + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()
        for key in keys
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
    keys, ts = _sign_prelude(secrets, event_id, timestamp)
    msg = f"{ts}.".encode() + body
    signature = " ".join("sha256=" + hmac.new(key, msg, hashlib.sha256).hexdigest() for key in keys)
    headers = {"X-Modal-Signature": signature, "X-Modal-Timestamp": ts}
    if event_id is not None:
        headers["X-Modal-Webhook-Id"] = event_id
    return headers


# --- verification (hub side; every request pays for it) --------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup of lowercase ``name``; an empty value counts as absent."""
    value = headers.get(name)
    if value is None:
        # Starlette Headers already match any case; plain dicts may not. Scan only on a miss so
        # the common path stays a single lookup.
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    return value or None


# Strict: rejects non-alphabet characters and bad padding instead of silently dropping them.
_b64decode = functools.partial(binascii.a2b_base64, strict_mode=True)


def _signatures(header: str, tag: str, decode: Callable[[str], bytes]) -> list[bytes]:
    """Decoded MACs of the ``tag`` entries; other entries (e.g. ``v1a,...``) are skipped."""
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        raise MalformedHeaderError("signature header too long")
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise MalformedHeaderError("too many signatures")
    cut = len(tag)
    found = []
    try:
        for entry in entries:
            if entry.startswith(tag):
                mac = decode(entry[cut:])
                if len(mac) != _DIGEST_SIZE:
                    raise ValueError
                found.append(mac)
    except ValueError:  # binascii.Error is a ValueError
        raise MalformedHeaderError(f"'{tag}' entry is not an encoded SHA-256 MAC") from None
    if not found:
        raise MalformedHeaderError(f"no '{tag}' entry in the signature header")
    return found


def _hmac_pads(key: bytes) -> "tuple[hashlib._Hash, hashlib._Hash]":
    """SHA-256 states after absorbing the HMAC inner and outer key pads (RFC 2104)."""
    if len(key) > _BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK_SIZE, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


class Verifier:
    """Verify callbacks against one or more active secrets (rotation: any may match).

    The standard scheme is used when ``webhook-signature`` is present, else the modal scheme when
    ``X-Modal-Signature`` is. Errors carry ``http_status``: 400 for missing or malformed headers,
    including a signature header with no ``v1,``/``sha256=`` entry (nothing this verifier can
    check); 401 for a wrong signature or a timestamp more than ``tolerance`` seconds from now,
    in either direction.
    """

    __slots__ = ("_pads", "tolerance")

    def __init__(
        self, secrets: str | bytes | Iterable[str | bytes], *, tolerance: int = DEFAULT_TOLERANCE
    ) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        self.tolerance = tolerance
        # HMAC from precomputed pad states: the same MAC as hmac.new(key, ...), but copying two
        # hashlib objects per call skips the hmac.HMAC wrapper, ~1.5 us of the ~10 us budget.
        self._pads = tuple(_hmac_pads(key) for key in parse_secrets(secrets))

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> VerifiedWebhook:
        """Return what the signature vouches for, or raise a ``WebhookVerificationError``."""
        signature = _header(headers, "webhook-signature")
        if signature is not None:
            event_id = _header(headers, "webhook-id")
            if event_id is None:
                raise MissingHeaderError("missing webhook-id header")
            raw_ts = _header(headers, "webhook-timestamp")
            if raw_ts is None:
                raise MissingHeaderError("missing webhook-timestamp header")
            # ASCII keeps .encode() total and matches what sign_standard allows.
            if len(event_id) > MAX_ID_LENGTH or not event_id.isascii():
                raise MalformedHeaderError("webhook-id must be at most 256 ASCII characters")
            presented = _signatures(signature, "v1,", _b64decode)
            prefix = f"{event_id}.{raw_ts}."
            scheme: Literal["standard", "modal"] = "standard"
        else:
            signature = _header(headers, "x-modal-signature")
            if signature is None:
                raise MissingHeaderError("missing webhook-signature or X-Modal-Signature header")
            raw_ts = _header(headers, "x-modal-timestamp")
            if raw_ts is None:
                raise MissingHeaderError("missing X-Modal-Timestamp header")
            event_id = _header(headers, "x-modal-webhook-id")
            if event_id is not None and (len(event_id) > MAX_ID_LENGTH or not event_id.isascii()):
                raise MalformedHeaderError(
                    "X-Modal-Webhook-Id must be at most 256 ASCII characters"
                )
            presented = _signatures(signature, "sha256=", bytes.fromhex)
            prefix = f"{raw_ts}."
            scheme = "modal"

        # ASCII digits only: int() would also accept "+1", " 1", "1_0" and non-ASCII digits.
        if len(raw_ts) > MAX_TIMESTAMP_DIGITS or not (raw_ts.isascii() and raw_ts.isdigit()):
            raise MalformedHeaderError("timestamp must be unix seconds")
        ts = int(raw_ts)
        # Written as "not <=" so a NaN ``now`` rejects instead of accepting everything.
        if not abs((time.time() if now is None else now) - ts) <= self.tolerance:
            raise TimestampOutOfToleranceError()

        # The timestamp header text is inside the MAC in both schemes, so a replay with a fresh
        # timestamp fails. Returning at the first match only reveals which secret matched, which
        # a caller holding a valid signature learns anyway; each comparison is constant-time.
        signed_prefix = prefix.encode()
        for inner_pad, outer_pad in self._pads:
            inner = inner_pad.copy()
            inner.update(signed_prefix)
            inner.update(body)
            outer = outer_pad.copy()
            outer.update(inner.digest())
            expected = outer.digest()
            for candidate in presented:
                if hmac.compare_digest(expected, candidate):
                    return VerifiedWebhook(event_id, ts, scheme)
        raise InvalidSignatureError()
