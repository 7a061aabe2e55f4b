"""FastAPI dependency: read the raw body under a size cap and verify its signature."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from modalhub import metrics
from modalhub.hub import Hub
from modalhub_sdk.signing import (
    InvalidSignatureError,
    MalformedHeaderError,
    MissingHeaderError,
    TimestampOutOfToleranceError,
    VerifiedWebhook,
    WebhookVerificationError,
)


@dataclass(frozen=True, slots=True)
class VerifiedCallback:
    hub: Hub
    body: bytes
    webhook: VerifiedWebhook


def reject(code: int, detail: str) -> HTTPException:
    metrics.WEBHOOKS_RECEIVED.labels(str(code)).inc()
    return HTTPException(code, detail)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def header_map(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict with lowercase names (the first of repeated
    names wins, as with Starlette's ``Headers.get``). Built once: each ``Headers.get`` is
    a scan of the raw list, and verification looks up several names."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in reversed(request.scope["headers"])
    }


def check_declared_length(headers: dict[str, str], limit: int) -> None:
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise reject(status.HTTP_400_BAD_REQUEST, "malformed Content-Length")
        if int(declared) > limit:
            raise reject(status.HTTP_413_CONTENT_TOO_LARGE, f"body exceeds {limit} bytes")


async def read_body_capped(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked bodies declare no length: stop reading at the cap
            raise reject(status.HTTP_413_CONTENT_TOO_LARGE, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def verified_callback(request: Request) -> VerifiedCallback:
    # The hub is read off the app directly: on this hot path each extra FastAPI
    # dependency costs more than verifying the signature.
    hub: Hub = request.app.state.hub
    limit = hub.settings.max_body_bytes
    headers = header_map(request)
    check_declared_length(headers, limit)
    if not _is_json(headers.get("content-type", "")):
        raise reject(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"
        )
    if hub.verifier is None:
        raise reject(status.HTTP_401_UNAUTHORIZED, "no webhook secret is configured on the hub")
    body = await read_body_capped(request, limit)
    try:
        webhook = hub.verifier.verify(body, headers)
    except (MissingHeaderError, MalformedHeaderError) as exc:
        raise reject(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except (InvalidSignatureError, TimestampOutOfToleranceError) as exc:
        raise reject(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    except WebhookVerificationError as exc:  # any future subclass: still the sender's fault
        raise reject(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return VerifiedCallback(hub=hub, body=body, webhook=webhook)
