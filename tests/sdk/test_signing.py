"""Tests for modalhub_sdk.signing.

Expected signatures come from `_std_sig` / `_modal_sig` below (hmac/hashlib/base64 directly) or
from literal vectors, never from the code under test. No test sleeps: `now=` is explicit, except
where the PyPI `standardwebhooks` library (which reads the real clock) is on one side.
"""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

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

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER_KEY = bytes(range(100, 132))
OTHER_SECRET = "whsec_" + base64.b64encode(OTHER_KEY).decode()
NOW = 1_700_000_000
MSG_ID = "msg_2bVxUn3ZkF0sdJQPjvJ6fN8Q"
BODY = json.dumps(
    {
        "type": "function.success",
        "call_id": "fc-01JABCDEF",
        "status": "success",
        "result": {"affinity": 0.63},
        "metadata": {"job_id": "job-abc123"},
    }
).encode()


def _std_sig(key: bytes, msg_id: str, ts: str, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _modal_sig(key: bytes, ts: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def _std_headers(
    key: bytes = KEY, msg_id: str = MSG_ID, ts: int | str = NOW, body: bytes = BODY
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": _std_sig(key, msg_id, str(ts), body),
    }


def _modal_headers(key: bytes = KEY, ts: int | str = NOW, body: bytes = BODY) -> dict[str, str]:
    return {"X-Modal-Signature": _modal_sig(key, str(ts), body), "X-Modal-Timestamp": str(ts)}


@pytest.fixture
def verifier() -> Verifier:
    return Verifier(SECRET)


# --- known answers ---

# Published Standard Webhooks / svix test vector.
KAT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KAT_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
KAT_TS = 1614265330
KAT_BODY = b'{"test": 2432232314}'
KAT_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# Modal scheme: HMAC-SHA256(b"modal-secret", b'1700000000.{"type":"function.success"}').hex()
KAT_MODAL_SIG = "sha256=72a39115648a1bafcd8a70fec2b7620847cbd042299aafaf753fa2894f03445c"
KAT_MODAL_BODY = b'{"type":"function.success"}'


def test_standard_known_answer_signs() -> None:
    headers = sign_standard(KAT_BODY, KAT_SECRET, event_id=KAT_ID, timestamp=KAT_TS)
    assert headers == {
        "webhook-id": KAT_ID,
        "webhook-timestamp": str(KAT_TS),
        "webhook-signature": KAT_SIG,
    }


def test_standard_known_answer_verifies() -> None:
    headers = {"webhook-id": KAT_ID, "webhook-timestamp": str(KAT_TS), "webhook-signature": KAT_SIG}
    result = Verifier(KAT_SECRET).verify(KAT_BODY, headers, now=KAT_TS)
    assert result == VerifiedWebhook(event_id=KAT_ID, timestamp=KAT_TS, scheme="standard")


def test_modal_known_answer_signs_and_verifies() -> None:
    headers = sign_modal(KAT_MODAL_BODY, "modal-secret", timestamp=NOW)
    assert headers == {"X-Modal-Signature": KAT_MODAL_SIG, "X-Modal-Timestamp": str(NOW)}
    result = Verifier("modal-secret").verify(KAT_MODAL_BODY, headers, now=NOW)
    assert result == VerifiedWebhook(event_id=None, timestamp=NOW, scheme="modal")


# --- signing matches an independent HMAC ---


def test_sign_standard_matches_independent_hmac() -> None:
    assert sign_standard(BODY, SECRET, event_id=MSG_ID, timestamp=NOW) == _std_headers()


def test_sign_modal_matches_independent_hmac_and_carries_id() -> None:
    headers = sign_modal(BODY, SECRET, timestamp=NOW, event_id="evt-1")
    assert headers == {**_modal_headers(), "X-Modal-Webhook-Id": "evt-1"}


def test_sign_uses_current_time_by_default() -> None:
    before = int(time.time())
    ts = int(sign_standard(BODY, SECRET, event_id=MSG_ID)["webhook-timestamp"])
    assert before <= ts <= int(time.time())


@pytest.mark.parametrize("event_id", ["", "x" * 257, "évt"])
def test_sign_standard_rejects_ids_the_verifier_would_refuse(event_id: str) -> None:
    with pytest.raises(ValueError):
        sign_standard(BODY, SECRET, event_id=event_id, timestamp=NOW)


# --- happy paths ---


def test_verify_standard(verifier: Verifier) -> None:
    result = verifier.verify(BODY, _std_headers(), now=NOW)
    assert result == VerifiedWebhook(event_id=MSG_ID, timestamp=NOW, scheme="standard")


def test_verify_modal_without_id(verifier: Verifier) -> None:
    result = verifier.verify(BODY, _modal_headers(), now=NOW)
    assert result == VerifiedWebhook(event_id=None, timestamp=NOW, scheme="modal")


def test_verify_modal_with_id(verifier: Verifier) -> None:
    headers = {**_modal_headers(), "X-Modal-Webhook-Id": "evt-42"}
    assert verifier.verify(BODY, headers, now=NOW).event_id == "evt-42"


def test_standard_scheme_wins_when_both_present(verifier: Verifier) -> None:
    headers = {**_std_headers(), "X-Modal-Signature": "sha256=" + "0" * 64}
    assert verifier.verify(BODY, headers, now=NOW).scheme == "standard"


def test_verified_webhook_is_frozen(verifier: Verifier) -> None:
    result = verifier.verify(BODY, _std_headers(), now=NOW)
    with pytest.raises(AttributeError):
        result.timestamp = 0  # type: ignore[misc]


@pytest.mark.parametrize("length", [1, 32, 63, 64, 65, 88, 200])
def test_any_key_length_verifies(length: int) -> None:
    # HMAC hashes keys longer than the SHA-256 block (64 bytes) first; `openssl rand -base64 64`
    # secrets are 88 characters long.
    key = bytes((7 * i + 3) % 256 for i in range(length))
    verifier = Verifier(key)
    assert verifier.verify(BODY, _std_headers(key=key), now=NOW).event_id == MSG_ID
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, _std_headers(key=key + b"x"), now=NOW)


# --- missing headers ---


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_standard_header(verifier: Verifier, name: str) -> None:
    headers = _std_headers()
    del headers[name]
    with pytest.raises(MissingHeaderError):
        verifier.verify(BODY, headers, now=NOW)


@pytest.mark.parametrize("name", ["X-Modal-Signature", "X-Modal-Timestamp"])
def test_missing_modal_header(verifier: Verifier, name: str) -> None:
    headers = _modal_headers()
    del headers[name]
    with pytest.raises(MissingHeaderError):
        verifier.verify(BODY, headers, now=NOW)


def test_empty_header_counts_as_missing(verifier: Verifier) -> None:
    headers = {**_std_headers(), "webhook-id": ""}
    with pytest.raises(MissingHeaderError):
        verifier.verify(BODY, headers, now=NOW)


def test_no_headers_at_all(verifier: Verifier) -> None:
    with pytest.raises(MissingHeaderError):
        verifier.verify(BODY, {}, now=NOW)


# --- timestamps ---


@pytest.mark.parametrize(
    "raw_ts",
    [
        "abc",
        "1700000000.5",
        "+1700000000",
        "-1700000000",
        " 1700000000",
        "1_700_000_000",
        "\u0661\u0667",  # Arabic-Indic digits: str.isdigit() and int() both accept them
    ],
)
def test_non_integer_timestamp(verifier: Verifier, raw_ts: str) -> None:
    # Signed over the bad text itself, so the format check is the only thing that can fail.
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, _std_headers(ts=raw_ts), now=NOW)


def test_non_integer_modal_timestamp(verifier: Verifier) -> None:
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, _modal_headers(ts="1700000000.0"), now=NOW)


def test_timestamp_with_too_many_digits(verifier: Verifier) -> None:
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, _std_headers(ts="0" + "1" * 12), now=NOW)


@pytest.mark.parametrize("offset", [-300, 300])
@pytest.mark.parametrize("make", [_std_headers, _modal_headers])
def test_timestamp_at_tolerance_accepted(
    verifier: Verifier, make: Callable[..., dict[str, str]], offset: int
) -> None:
    headers = make(ts=NOW + offset)
    assert verifier.verify(BODY, headers, now=NOW).timestamp == NOW + offset


@pytest.mark.parametrize("offset", [-301, 301])
@pytest.mark.parametrize("make", [_std_headers, _modal_headers])
def test_timestamp_beyond_tolerance_rejected(
    verifier: Verifier, make: Callable[..., dict[str, str]], offset: int
) -> None:
    headers = make(ts=NOW + offset)
    with pytest.raises(TimestampOutOfToleranceError):
        verifier.verify(BODY, headers, now=NOW)


def test_custom_tolerance() -> None:
    verifier = Verifier(SECRET, tolerance=10)
    verifier.verify(BODY, _std_headers(ts=NOW - 10), now=NOW)
    with pytest.raises(TimestampOutOfToleranceError):
        verifier.verify(BODY, _std_headers(ts=NOW - 11), now=NOW)


def test_fractional_now_beyond_tolerance_rejected(verifier: Verifier) -> None:
    with pytest.raises(TimestampOutOfToleranceError):
        verifier.verify(BODY, _std_headers(ts=NOW - 300), now=NOW + 0.5)


def test_default_now_is_the_real_clock(verifier: Verifier) -> None:
    with pytest.raises(TimestampOutOfToleranceError):
        verifier.verify(BODY, _std_headers(ts=NOW - 10**6))


def test_negative_tolerance_rejected() -> None:
    with pytest.raises(ValueError):
        Verifier(SECRET, tolerance=-1)


# --- signature mismatches ---


def test_wrong_secret(verifier: Verifier) -> None:
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, _std_headers(key=OTHER_KEY), now=NOW)


def test_wrong_secret_modal(verifier: Verifier) -> None:
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, _modal_headers(key=OTHER_KEY), now=NOW)


def test_tampered_body(verifier: Verifier) -> None:
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY + b" ", _std_headers(), now=NOW)


def test_tampered_body_modal(verifier: Verifier) -> None:
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY.replace(b"success", b"failure"), _modal_headers(), now=NOW)


def test_tampered_id(verifier: Verifier) -> None:
    headers = {**_std_headers(), "webhook-id": MSG_ID + "x"}
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, headers, now=NOW)


def test_tampered_timestamp(verifier: Verifier) -> None:
    headers = {**_std_headers(), "webhook-timestamp": str(NOW + 1)}
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, headers, now=NOW)


def test_modal_replay_with_fresh_timestamp(verifier: Verifier) -> None:
    captured = _modal_headers(ts=NOW - 3600)
    replayed = {**captured, "X-Modal-Timestamp": str(NOW)}
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, replayed, now=NOW)


def test_signature_for_unknown_version_does_not_count(verifier: Verifier) -> None:
    good = _std_headers()["webhook-signature"]
    headers = {**_std_headers(), "webhook-signature": "v2," + good[3:]}
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, headers, now=NOW)


# --- rotation ---


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_rotation_either_secret_verifies(key: bytes) -> None:
    verifier = Verifier([SECRET, OTHER_SECRET])
    assert verifier.verify(BODY, _std_headers(key=key), now=NOW).event_id == MSG_ID


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_rotation_either_secret_verifies_modal(key: bytes) -> None:
    verifier = Verifier(f"{SECRET},{OTHER_SECRET}")
    assert verifier.verify(BODY, _modal_headers(key=key), now=NOW).scheme == "modal"


def test_multi_signature_header_one_match(verifier: Verifier) -> None:
    stale = _std_sig(OTHER_KEY, MSG_ID, str(NOW), BODY)
    headers = {
        **_std_headers(),
        "webhook-signature": f"{stale} {_std_headers()['webhook-signature']}",
    }
    assert verifier.verify(BODY, headers, now=NOW).scheme == "standard"


def test_multi_signature_modal_header_one_match(verifier: Verifier) -> None:
    stale = _modal_sig(OTHER_KEY, str(NOW), BODY)
    headers = {
        **_modal_headers(),
        "X-Modal-Signature": f"{stale} {_modal_sig(KEY, str(NOW), BODY)}",
    }
    assert verifier.verify(BODY, headers, now=NOW).scheme == "modal"


def test_multi_signature_header_no_match(verifier: Verifier) -> None:
    a = _std_sig(OTHER_KEY, MSG_ID, str(NOW), BODY)
    b = _std_sig(b"third", MSG_ID, str(NOW), BODY)
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, {**_std_headers(), "webhook-signature": f"{a} {b}"}, now=NOW)


def test_sign_with_two_secrets_emits_both() -> None:
    headers = sign_standard(BODY, [SECRET, OTHER_SECRET], event_id=MSG_ID, timestamp=NOW)
    assert headers["webhook-signature"] == " ".join(
        [_std_sig(KEY, MSG_ID, str(NOW), BODY), _std_sig(OTHER_KEY, MSG_ID, str(NOW), BODY)]
    )
    modal = sign_modal(BODY, [SECRET, OTHER_SECRET], timestamp=NOW)
    assert modal["X-Modal-Signature"] == " ".join(
        [_modal_sig(KEY, str(NOW), BODY), _modal_sig(OTHER_KEY, str(NOW), BODY)]
    )


@pytest.mark.parametrize("secret", [SECRET, OTHER_SECRET])
def test_rotated_sender_verifies_with_either_single_secret(secret: str) -> None:
    headers = sign_standard(BODY, [SECRET, OTHER_SECRET], event_id=MSG_ID, timestamp=NOW)
    assert Verifier(secret).verify(BODY, headers, now=NOW).event_id == MSG_ID


# --- secrets ---


def test_whsec_secret_is_base64_decoded() -> None:
    assert parse_secret(SECRET) == KEY


def test_whsec_secret_without_padding() -> None:
    unpadded = "whsec_" + base64.b64encode(b"\x01" * 31).decode().rstrip("=")
    assert parse_secret(unpadded) == b"\x01" * 31


def test_plain_secret_is_used_as_utf8_not_decoded() -> None:
    # What `openssl rand -base64 32` prints: valid base64, yet used verbatim (as in the seed).
    plain = "q3Jd0Rk1zv6nS8m0cQv2Zr+1bW6y1V4Lx9cT8oPq7Hs="
    assert parse_secret(plain) == plain.encode()
    verifier = Verifier(plain)
    verifier.verify(BODY, _std_headers(key=plain.encode()), now=NOW)
    with pytest.raises(InvalidSignatureError):
        verifier.verify(BODY, _std_headers(key=base64.b64decode(plain)), now=NOW)


def test_plain_secret_is_stripped() -> None:
    assert parse_secret("  s3cret\n") == b"s3cret"


def test_bytes_secret_used_as_is() -> None:
    assert parse_secret(b"whsec_notdecoded") == b"whsec_notdecoded"


@pytest.mark.parametrize("secret", ["", "   \n", b"", b"  ", "whsec_"])
def test_empty_secret_rejected(secret: str | bytes) -> None:
    with pytest.raises(ValueError):
        parse_secret(secret)


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_a"])
def test_whsec_invalid_base64_rejected(secret: str) -> None:
    with pytest.raises(ValueError):
        parse_secret(secret)


def test_parse_secrets_splits_on_commas_and_whitespace() -> None:
    assert parse_secrets(f" {SECRET},  alpha\tbeta,,\ngamma ") == [KEY, b"alpha", b"beta", b"gamma"]


def test_parse_secrets_dedupes_preserving_order() -> None:
    raw = base64.b64encode(KEY).decode()
    assert parse_secrets(["b", SECRET, "a", "b", KEY, f"whsec_{raw}"]) == [b"b", KEY, b"a"]


def test_parse_secrets_bytes_is_one_key() -> None:
    assert parse_secrets(b"a, b") == [b"a, b"]


@pytest.mark.parametrize("value", ["", " , ,", []])
def test_parse_secrets_none_rejected(value: str | list[str]) -> None:
    with pytest.raises(ValueError):
        parse_secrets(value)


def test_verifier_requires_a_secret() -> None:
    with pytest.raises(ValueError):
        Verifier("")


# --- bounds and malformed input ---


def test_webhook_id_at_limit_accepted(verifier: Verifier) -> None:
    verifier.verify(BODY, _std_headers(msg_id="i" * 256), now=NOW)


def test_webhook_id_too_long(verifier: Verifier) -> None:
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, _std_headers(msg_id="i" * 257), now=NOW)


def test_modal_webhook_id_too_long(verifier: Verifier) -> None:
    headers = {**_modal_headers(), "X-Modal-Webhook-Id": "i" * 257}
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, headers, now=NOW)


def test_signature_header_too_long(verifier: Verifier) -> None:
    headers = _std_headers()
    headers["webhook-signature"] = "v1a," + "A" * 4100 + " " + headers["webhook-signature"]
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, headers, now=NOW)


def test_too_many_signatures(verifier: Verifier) -> None:
    good = _std_headers()["webhook-signature"]
    with pytest.raises(MalformedHeaderError):
        verifier.verify(
            BODY, {**_std_headers(), "webhook-signature": " ".join([good] * 17)}, now=NOW
        )


def test_sixteen_signatures_accepted(verifier: Verifier) -> None:
    stale = _std_sig(OTHER_KEY, MSG_ID, str(NOW), BODY)
    good = _std_headers()["webhook-signature"]
    headers = {**_std_headers(), "webhook-signature": " ".join([stale] * 15 + [good])}
    verifier.verify(BODY, headers, now=NOW)


def test_unknown_version_prefix_ignored(verifier: Verifier) -> None:
    good = _std_headers()["webhook-signature"]
    headers = {**_std_headers(), "webhook-signature": f"v1a,Zm9vYmFy!!not-base64 {good}"}
    assert verifier.verify(BODY, headers, now=NOW).scheme == "standard"


def test_only_unknown_versions_is_malformed(verifier: Verifier) -> None:
    headers = {**_std_headers(), "webhook-signature": "v1a,abc v2,def"}
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, headers, now=NOW)


@pytest.mark.parametrize(
    "entry",
    ["v1,", "v1,not*base64*at*all", "v1,AAAA", "v1," + "A" * 43, "v1," + "é" * 43 + "="],
)
def test_bad_base64_signature(verifier: Verifier, entry: str) -> None:
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, {**_std_headers(), "webhook-signature": entry}, now=NOW)


@pytest.mark.parametrize("value", ["sha256=", "sha256=" + "zz" * 32, "sha256=" + "ab" * 31])
def test_bad_hex_signature(verifier: Verifier, value: str) -> None:
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, {**_modal_headers(), "X-Modal-Signature": value}, now=NOW)


def test_non_ascii_webhook_id(verifier: Verifier) -> None:
    with pytest.raises(MalformedHeaderError):
        verifier.verify(BODY, {**_std_headers(), "webhook-id": "msg_é"}, now=NOW)


# --- header case ---


def test_mixed_case_plain_dict_standard(verifier: Verifier) -> None:
    h = _std_headers()
    headers = {
        "Webhook-Id": h["webhook-id"],
        "WEBHOOK-TIMESTAMP": h["webhook-timestamp"],
        "Webhook-Signature": h["webhook-signature"],
    }
    assert verifier.verify(BODY, headers, now=NOW).event_id == MSG_ID


def test_mixed_case_plain_dict_modal(verifier: Verifier) -> None:
    h = _modal_headers()
    headers = {
        "x-modal-signature": h["X-Modal-Signature"],
        "X-MODAL-TIMESTAMP": h["X-Modal-Timestamp"],
        "x-Modal-Webhook-ID": "evt-7",
    }
    assert verifier.verify(BODY, headers, now=NOW).event_id == "evt-7"


def test_starlette_headers(verifier: Verifier) -> None:
    datastructures = pytest.importorskip("starlette.datastructures")
    headers = datastructures.Headers(headers={**_modal_headers(), "X-Modal-Webhook-Id": "evt-9"})
    assert verifier.verify(BODY, headers, now=NOW).event_id == "evt-9"


# --- errors ---


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MissingHeaderError, 400),
        (MalformedHeaderError, 400),
        (InvalidSignatureError, 401),
        (TimestampOutOfToleranceError, 401),
    ],
)
def test_error_hierarchy_and_status(error: type[WebhookVerificationError], status: int) -> None:
    exc = error()
    assert isinstance(exc, WebhookVerificationError)
    assert exc.http_status == status
    assert str(exc)


# --- interop with the PyPI standardwebhooks library (real clock: it cannot take `now`) ---


def test_standardwebhooks_signature_verifies_with_us() -> None:
    now = int(time.time())
    signature = Webhook(SECRET).sign(MSG_ID, datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(now), "webhook-signature": signature}
    assert Verifier(SECRET).verify(BODY, headers, now=now).event_id == MSG_ID


def test_our_signature_verifies_with_standardwebhooks() -> None:
    headers = sign_standard(BODY, SECRET, event_id=MSG_ID)
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


def test_our_rotated_signature_verifies_with_standardwebhooks() -> None:
    headers = sign_standard(BODY, [OTHER_SECRET, SECRET], event_id=MSG_ID)
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)
