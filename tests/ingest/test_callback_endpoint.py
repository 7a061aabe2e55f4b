"""The callback endpoint's contract: status codes, dedupe, and nothing stored on rejection."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx

from modalhub.hub import Hub
from modalhub_sdk.signing import sign_modal
from tests.helpers import CALLBACK_PATH, event, signed


def stored_rows(hub: Hub) -> tuple[int, int]:
    with sqlite3.connect(hub.settings.sqlite_path) as conn:
        inbox = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    return inbox, jobs


async def test_signed_event_is_accepted_then_duplicate(client: httpx.AsyncClient) -> None:
    body, headers = signed(event(), event_id="evt-1")
    first = await client.post(CALLBACK_PATH, content=body, headers=headers)
    second = await client.post(CALLBACK_PATH, content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json() == {"status": "accepted", "event_id": "evt-1"}
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"


async def test_seed_header_scheme_is_accepted(client: httpx.AsyncClient, hub: Hub) -> None:
    raw = json.dumps({"call_id": "call-123", "status": "success", "result": {"a": 1}}).encode()
    headers = sign_modal(raw, hub.settings.webhook_secrets)
    headers["Content-Type"] = "application/json"
    response = await client.post(CALLBACK_PATH, content=raw, headers=headers)
    assert response.status_code == 202, response.text
    # Without X-Modal-Webhook-Id the id is derived from (call_id, type): a resend is a duplicate.
    assert response.json()["event_id"] == "call-123:function.success"
    again = await client.post(
        CALLBACK_PATH,
        content=raw,
        headers=sign_modal(raw, hub.settings.webhook_secrets)
        | {"Content-Type": "application/json"},
    )
    assert again.json()["status"] == "duplicate"


def _rejections(hub: Hub) -> list[tuple[str, bytes, dict[str, str], int]]:
    now = int(time.time())
    tol = hub.settings.signature_tolerance_seconds
    good_body, good = signed(event(), event_id="evt-x")
    cases: list[tuple[str, bytes, dict[str, str], int]] = []

    def case(name: str, body: bytes, headers: dict[str, str], code: int) -> None:
        cases.append((name, body, headers, code))

    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        case(f"missing {missing}", good_body, {k: v for k, v in good.items() if k != missing}, 400)
    case("garbled signature", good_body, good | {"webhook-signature": "v1,@@@notbase64"}, 400)
    case("non-integer timestamp", good_body, good | {"webhook-timestamp": "soon"}, 400)
    case("huge signature header", good_body, good | {"webhook-signature": "v1," + "A" * 6000}, 400)
    case("huge event id", good_body, good | {"webhook-id": "e" * 2000}, 400)
    case("wrong secret", *signed(event(), event_id="evt-x", secret="other-secret"), 401)
    case("tampered body", good_body.replace(b"fc-1", b"fc-2"), good, 401)
    case("too old", *signed(event(), event_id="evt-x", timestamp=now - tol - 5), 401)
    case("too new", *signed(event(), event_id="evt-x", timestamp=now + tol + 5), 401)
    case("not json content type", good_body, good | {"content-type": "text/plain"}, 415)
    case("no content type", good_body, {k: v for k, v in good.items() if k != "content-type"}, 415)
    case("body not json", *signed(b"{not json", event_id="evt-x"), 400)
    case("schema: no call_id", *signed({"type": "function.success"}, event_id="evt-x"), 422)
    case("schema: unknown type", *signed(event("function.exploded"), event_id="evt-x"), 422)
    case("schema: json array", *signed(b"[1, 2]", event_id="evt-x"), 422)
    case("schema: bad call id", *signed(event(call_id="../../etc"), event_id="evt-x"), 422)
    case(
        "schema: progress without percent",
        *signed(event("function.progress"), event_id="evt-x"),
        422,
    )
    case(
        "schema: percent out of range",
        *signed(event("function.progress", progress={"percent": 150}), event_id="evt-x"),
        422,
    )
    return cases


async def test_bad_input_gets_its_4xx_and_leaves_no_trace(
    client: httpx.AsyncClient, hub: Hub
) -> None:
    failures = []
    for name, body, headers, code in _rejections(hub):
        response = await client.post(CALLBACK_PATH, content=body, headers=headers)
        if response.status_code != code:
            failures.append(f"{name}: {response.status_code} {response.text[:200]}")
        assert "detail" in response.json()
    assert not failures, failures
    assert stored_rows(hub) == (0, 0)


async def test_tolerance_edges_are_accepted(client: httpx.AsyncClient, hub: Hub) -> None:
    tol = hub.settings.signature_tolerance_seconds
    now = int(time.time())
    # One second inside each edge, so the test cannot race the clock tick.
    for index, ts in enumerate((now - tol + 1, now + tol - 1)):
        body, headers = signed(
            event(call_id=f"fc-edge-{index}"), event_id=f"e{index}", timestamp=ts
        )
        response = await client.post(CALLBACK_PATH, content=body, headers=headers)
        assert response.status_code == 202, response.text


async def test_body_over_cap_is_413(client: httpx.AsyncClient, hub: Hub) -> None:
    big = event(result={"blob_base64": "A" * (hub.settings.max_body_bytes + 10)})
    body, headers = signed(big, event_id="evt-big")
    response = await client.post(CALLBACK_PATH, content=body, headers=headers)
    assert response.status_code == 413

    async def chunks():  # no Content-Length: the cap must still hold while streaming
        for _ in range(0, len(body), 65536):
            yield b"A" * 65536

    streamed_headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    response = await client.post(CALLBACK_PATH, content=chunks(), headers=streamed_headers)
    assert response.status_code == 413
    assert stored_rows(hub) == (0, 0)


async def test_secret_rotation_accepts_any_active_secret(tmp_path, settings) -> None:
    from modalhub.app import create_app

    rotated = settings.model_copy(update={"webhook_secrets": ["old-secret-abc", "new-secret-xyz"]})
    rotated.__dict__.pop("signing_keys", None)
    app = create_app(rotated)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            for index, secret in enumerate(("old-secret-abc", "new-secret-xyz")):
                body, headers = signed(
                    event(call_id=f"fc-r{index}"), event_id=f"r{index}", secret=secret
                )
                response = await client.post(CALLBACK_PATH, content=body, headers=headers)
                assert response.status_code == 202
            body, headers = signed(event(), event_id="r3", secret="retired-secret")
            assert (
                await client.post(CALLBACK_PATH, content=body, headers=headers)
            ).status_code == 401


async def test_replay_with_fresh_timestamp_is_refused(client: httpx.AsyncClient) -> None:
    body, headers = signed(event(), event_id="evt-replay", timestamp=int(time.time()) - 100)
    headers["webhook-timestamp"] = str(int(time.time()))  # captured request, new timestamp
    response = await client.post(CALLBACK_PATH, content=body, headers=headers)
    assert response.status_code == 401


async def test_unsigned_modal_webhook_id_cannot_defeat_dedupe(
    client: httpx.AsyncClient, hub: Hub
) -> None:
    raw = json.dumps(event("function.success", "fc-swap", result={"a": 1})).encode()
    headers = sign_modal(raw, hub.settings.webhook_secrets, event_id="id-1")
    headers["Content-Type"] = "application/json"
    first = await client.post(CALLBACK_PATH, content=raw, headers=headers)
    # A captured request replayed with another (unsigned) X-Modal-Webhook-Id.
    replay = await client.post(
        CALLBACK_PATH, content=raw, headers=headers | {"X-Modal-Webhook-Id": "id-2"}
    )
    assert first.status_code == 202
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
