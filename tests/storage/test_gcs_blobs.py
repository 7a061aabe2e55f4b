"""GcsBlobStore beyond the BlobStore contract: object layout, signed URLs, faults.

Runs against the session's fake-gcs-server (tests/emulators.py); nothing here needs
real credentials or the network.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage
from google.oauth2 import service_account

from modalhub.config import Settings
from modalhub.storage.factory import build_blob_store
from modalhub.storage.gcs_blobs import GcsBlobStore
from modalhub.storage.protocols import StoreUnavailableError
from tests.emulators import PROJECT, FakeGcsServer
from tests.storage.blob_store_backends import create_bucket, unique_bucket_name

StoreFactory = Callable[..., Awaitable[GcsBlobStore]]


@pytest.fixture
async def make_store(gcs_emulator: FakeGcsServer) -> AsyncIterator[StoreFactory]:
    """Open GcsBlobStores on fresh buckets; all are closed at the end of the test."""
    opened: list[GcsBlobStore] = []

    async def make(
        *, prefix: str = "", timeout_seconds: float = 5.0, credentials: Credentials | None = None
    ) -> GcsBlobStore:
        bucket = unique_bucket_name()
        await create_bucket(bucket)
        store = GcsBlobStore(
            bucket,
            prefix=prefix,
            project=PROJECT,
            timeout_seconds=timeout_seconds,
            credentials=credentials,
        )
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def raw_blob(store: GcsBlobStore, name: str) -> Any:
    """The object as GCS sees it, read with a client of the test's own."""
    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    try:
        return client.bucket(store.bucket_name).get_blob(name, timeout=10)
    finally:
        client.close()


# --- object layout -------------------------------------------------------------------


async def test_uri_prefix_and_content_type(make_store: StoreFactory) -> None:
    store = await make_store(prefix="staging/hub/")
    ref = await store.put_if_absent(
        "results/job-1/result.json", b'{"a":1}', content_type="application/json"
    )
    name = "staging/hub/results/job-1/result.json"
    assert ref.uri == f"gs://{store.bucket_name}/{name}"
    assert ref.key == "results/job-1/result.json" and ref.created
    blob = await asyncio.to_thread(raw_blob, store, name)
    assert blob is not None
    assert blob.content_type == "application/json"
    assert blob.size == len(b'{"a":1}')
    # Only under the prefix: nothing at the bare key.
    assert await asyncio.to_thread(raw_blob, store, "results/job-1/result.json") is None
    assert await store.get("results/job-1/result.json") == b'{"a":1}'


async def test_second_put_keeps_first_content_type(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.put_if_absent("results/j/f", b"one", content_type="application/octet-stream")
    again = await store.put_if_absent("results/j/f", b"two", content_type="text/plain")
    assert not again.created
    blob = await asyncio.to_thread(raw_blob, store, "results/j/f")
    assert blob.content_type == "application/octet-stream"
    assert await store.get("results/j/f") == b"one"


async def test_keys_are_normalised_like_the_local_store(make_store: StoreFactory) -> None:
    store = await make_store(prefix="p/")
    first = await store.put_if_absent("results//j/./a.bin", b"x", content_type="x/y")
    second = await store.put_if_absent("results/j/a.bin", b"y", content_type="x/y")
    assert first.uri == second.uri == f"gs://{store.bucket_name}/p/results/j/a.bin"
    assert (first.created, second.created) == (True, False)


@pytest.mark.parametrize("key", ["a\nb", "a\rb", "x" * 1100, ".well-known/acme-challenge/t"])
async def test_keys_gcs_refuses_are_value_errors(make_store: StoreFactory, key: str) -> None:
    store = await make_store()
    with pytest.raises(ValueError):
        await store.put_if_absent(key, b"x", content_type="x/y")
    with pytest.raises(ValueError):
        await store.get(key)


async def test_large_blob_round_trip(make_store: StoreFactory) -> None:
    store = await make_store()
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB: above the multipart limit (resumable)
    ref = await store.put_if_absent("results/j/big.bin", data, content_type="x/y")
    again = await store.put_if_absent("results/j/big.bin", b"other", content_type="x/y")
    assert (ref.created, again.created) == (True, False)
    assert await store.get("results/j/big.bin") == data


def test_from_settings_and_factory(tmp_path: Any) -> None:
    settings = Settings(
        data_dir=tmp_path,
        blobs="gcs",
        gcs_bucket="results-bucket",
        gcs_prefix="prod/",
        gcp_project="proj-1",
        backend_timeout_seconds=2.5,
    )
    store = GcsBlobStore.from_settings(settings)
    assert (store.bucket_name, store.prefix, store.project, store.timeout) == (
        "results-bucket",
        "prod/",
        "proj-1",
        2.5,
    )
    assert isinstance(build_blob_store(settings), GcsBlobStore)
    assert store.uri(store.object_name("results/j/result.json")) == (
        "gs://results-bucket/prod/results/j/result.json"
    )


@pytest.mark.parametrize("prefix", ["no-slash", "/abs/", "a//b/"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError):
        GcsBlobStore("b", prefix=prefix)


# --- signed URLs -----------------------------------------------------------------------


async def test_signed_url_is_none_with_anonymous_credentials(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.put_if_absent("results/j/a.bin", b"x", content_type="x/y")
    assert await store.signed_url("results/j/a.bin") is None


def local_service_account() -> service_account.Credentials:
    """Service-account credentials with a key generated here: they sign locally."""
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": f"hub@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return service_account.Credentials.from_service_account_info(info)


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def test_signed_url_with_service_account_key(make_store: StoreFactory) -> None:
    writer = await make_store(prefix="p/")
    await writer.put_if_absent("results/j/a.bin", b"payload", content_type="x/y")
    # A store holding a key: it signs with no network call (its uploads would first
    # fetch an OAuth token from Google, so the anonymous store above wrote the blob).
    store = GcsBlobStore(writer.bucket_name, prefix="p/", credentials=local_service_account())
    await store.open()
    try:
        url = await store.signed_url("results/j/a.bin", expires_seconds=600)
    finally:
        await store.close()
    assert url is not None
    parts = urlsplit(url)
    assert parts.path == f"/{store.bucket_name}/p/results/j/a.bin"
    params = query(url)
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Credential"].startswith(f"hub@{PROJECT}.iam.gserviceaccount.com/")
    assert params["X-Goog-Expires"] == "600"
    assert len(params["X-Goog-Signature"]) == 512  # hex of a 2048-bit RSA signature
    # The emulator ignores signatures, but serves the object the URL names.
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: ASYNC210
        assert response.read() == b"payload"
    with pytest.raises(ValueError):
        await writer.signed_url("results/j/a.bin", expires_seconds=8 * 24 * 3600)
    with pytest.raises(ValueError):
        await writer.signed_url("../x")


class MetadataServerCredentials(Credentials):
    """Like Workload Identity's credentials: a token for a service account, no key."""

    def __init__(self) -> None:
        super().__init__()
        self.service_account_email = "default"
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = "ya29.test-token"
        self.service_account_email = f"hub@{PROJECT}.iam.gserviceaccount.com"


async def test_signed_url_through_iam_sign_blob(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud.storage import _signing

    calls: list[tuple[str, str]] = []

    def fake_sign_blob(message: str, access_token: str, email: str, *args: Any) -> str:
        calls.append((access_token, email))  # the real one POSTs to iamcredentials
        return base64.b64encode(b"\x01" * 256).decode()

    monkeypatch.setattr(_signing, "_sign_message", fake_sign_blob)
    credentials = MetadataServerCredentials()
    store = await make_store(credentials=credentials)
    url = await store.signed_url("results/j/a.bin")
    assert url is not None
    assert calls == [("ya29.test-token", f"hub@{PROJECT}.iam.gserviceaccount.com")]
    assert credentials.refreshes == 1
    params = query(url)
    assert params["X-Goog-Credential"].startswith(f"hub@{PROJECT}.iam.gserviceaccount.com/")
    assert params["X-Goog-Signature"] == "01" * 256


# --- faults ----------------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        await call()
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


async def test_emulator_down_then_back(
    make_store: StoreFactory, gcs_emulator: FakeGcsServer
) -> None:
    store = await make_store(prefix="p/", timeout_seconds=1.0)
    await store.put_if_absent("results/j/before", b"x", content_type="x/y")
    gcs_emulator.stop()
    try:
        for call in (
            lambda: store.put_if_absent("results/j/during", b"x", content_type="x/y"),
            store.ping,
            lambda: store.get("results/j/before"),
        ):
            elapsed, error = await timed(call)
            assert isinstance(error, StoreUnavailableError), error
            assert elapsed < 3.0
            assert "refused" in str(error).lower() or "within" in str(error)
        with pytest.raises(ValueError):  # a bad key stays a ValueError while GCS is down
            await store.put_if_absent("../x", b"x", content_type="x/y")
    finally:
        gcs_emulator.start()
    # The in-memory emulator lost everything: the bucket must be made again.
    with pytest.raises(StoreUnavailableError, match="bucket not found"):
        await store.ping()
    await create_bucket(store.bucket_name)
    await store.ping()
    ref = await store.put_if_absent("results/j/after", b"y", content_type="x/y")
    assert ref.created
    assert await store.get("results/j/after") == b"y"


@pytest.fixture
def silent_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A port that accepts TCP connections and never answers: a hung backend."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        yield host


async def test_a_hung_backend_never_hangs_a_call(silent_server: str) -> None:
    store = GcsBlobStore("hung-bucket", project=PROJECT, timeout_seconds=0.5)
    await store.open()
    try:
        for call in (
            lambda: store.put_if_absent("results/j/a", b"x", content_type="x/y"),
            lambda: store.get("results/j/a"),
            store.ping,
        ):
            elapsed, error = await timed(call)
            assert isinstance(error, StoreUnavailableError), error
            assert elapsed < 1.5
    finally:
        await store.close()


async def test_closed_store_is_unavailable(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    with pytest.raises(StoreUnavailableError):
        await store.put_if_absent("a", b"x", content_type="x/y")
    with contextlib.suppress(StoreUnavailableError):
        await store.close()  # closing twice is harmless


async def test_refused_rewrite_of_an_existing_blob_is_not_created(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account without storage.objects.delete may get 403, not 412, for a re-run's
    write: the blob exists, so the write is a no-op; a 403 for a new blob stays an error."""
    from google.api_core import exceptions as api_exceptions
    from google.cloud.storage import Blob

    store = await make_store()
    await store.put_if_absent("results/j/a", b"one", content_type="x/y")

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise api_exceptions.Forbidden("does not have storage.objects.delete access")

    monkeypatch.setattr(Blob, "upload_from_string", refuse)
    again = await store.put_if_absent("results/j/a", b"two", content_type="x/y")
    assert not again.created
    with pytest.raises(StoreUnavailableError, match="403"):
        await store.put_if_absent("results/j/new", b"x", content_type="x/y")
    assert await store.get("results/j/a") == b"one"
