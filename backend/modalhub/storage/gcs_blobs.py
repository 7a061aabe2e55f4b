"""Result blobs in Google Cloud Storage, written create-only.

Every write is a conditional create (``ifGenerationMatch=0``): GCS itself refuses to
replace an existing object, so a re-run, a retried upload or a concurrent writer in
another replica can never clobber or duplicate a result. Google imports stay here.

The client is blocking, so its calls run on a small thread pool owned by the store,
never on the event loop. ``backend_timeout_seconds`` (T) bounds them three ways: each
HTTP attempt times out after T, the library's retry starts no new attempt after T/2,
and the caller stops waiting after T (plus one second per MiB uploaded) whatever the
thread is doing; the abandoned thread ends within about 1.5 T. Every backend failure
surfaces as ``StoreUnavailableError``.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import google.auth
import urllib3.exceptions
from google.api_core import exceptions as api_exceptions
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions
from google.auth.transport.requests import Request as AuthRequest
from google.cloud.storage import Client as StorageClient  # type: ignore[import-untyped]
from google.cloud.storage import exceptions as storage_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

from modalhub.storage.local_blobs import _checked_key
from modalhub.storage.protocols import BlobRef, StoreUnavailableError

if TYPE_CHECKING:
    from modalhub.config import Settings

_T = TypeVar("_T")

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
# One scope for both storage and the IAM signBlob call that signs URLs under
# Workload Identity (a token scoped to storage only cannot call IAM).
_CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# requests keeps 10 pooled connections per host: one per worker thread.
_WORKER_THREADS = 10
# A large upload may take longer than T while it makes progress: the caller's bound
# grows by one second per MiB.
_MIN_UPLOAD_BYTES_PER_SECOND = 1024 * 1024
_MAX_SIGNED_URL_SECONDS = 7 * 24 * 3600  # the V4 limit
_MAX_OBJECT_NAME_BYTES = 1024

_BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    api_exceptions.GoogleAPIError,  # error answers (GoogleAPICallError) and RetryError
    auth_exceptions.GoogleAuthError,  # no credentials, token refresh or signBlob failed
    storage_exceptions.InvalidResponse,
    storage_exceptions.DataCorruption,
    OSError,  # refused, reset, socket timeouts; requests' exceptions derive from it too
    http.client.HTTPException,
    urllib3.exceptions.HTTPError,
)


def _describe(exc: BaseException) -> str:
    """A short, one-line account of a failure: the error and its root cause."""
    if isinstance(exc, api_exceptions.NotFound):
        return "bucket not found"
    root = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    text = type(exc).__name__
    if isinstance(exc, api_exceptions.RetryError):
        text = "retries exhausted"
    elif isinstance(exc, api_exceptions.GoogleAPICallError):
        text = f"HTTP {exc.code} {exc.message}"
    if root is not exc:
        text += f" ({type(root).__name__}: {root})"
    elif not isinstance(exc, api_exceptions.GoogleAPICallError):
        text += f": {exc}"
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= 200 else text[:197] + "..."


class GcsBlobStore:
    """A ``BlobStore`` on one bucket; object name = prefix + key, URI ``gs://bucket/name``."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        project: str | None = None,
        timeout_seconds: float = 5.0,
        credentials: auth_credentials.Credentials | None = None,
    ) -> None:
        if prefix and (not prefix.endswith("/") or prefix.startswith("/") or "//" in prefix):
            raise ValueError(f"GCS prefix must be empty or like 'a/b/', not {prefix!r}")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.bucket_name = bucket
        self.prefix = prefix
        self.project = project
        self.timeout = timeout_seconds
        # None: found at open() (anonymous for the emulator, else Application Default
        # Credentials: Workload Identity, GOOGLE_APPLICATION_CREDENTIALS, gcloud).
        self._credentials = credentials
        self._retry = DEFAULT_RETRY.with_timeout(timeout_seconds / 2).with_delay(
            initial=0.1, maximum=1.0, multiplier=2.0
        )
        self._client: Any = None
        self._bucket: Any = None
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> GcsBlobStore:
        if not settings.gcs_bucket:
            raise ValueError("MODALHUB_BLOBS=gcs needs MODALHUB_GCS_BUCKET")
        return cls(
            settings.gcs_bucket,
            prefix=settings.gcs_prefix,
            project=settings.gcp_project,
            timeout_seconds=settings.backend_timeout_seconds,
        )

    # --- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Build the client and the bucket handle. Contacts no bucket: the hub starts
        while GCS is unreachable, and ``ping`` reports it."""
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(
            max_workers=_WORKER_THREADS, thread_name_prefix="modalhub-gcs"
        )
        self._executor = executor
        try:
            # No caller bound: finding credentials may probe the metadata server,
            # which google-auth bounds with its own timeouts.
            self._client, self._bucket, self._credentials = await self._run(
                "open", self._connect, budget=None
            )
        except BaseException:
            self._executor = None
            executor.shutdown(wait=False)
            raise

    def _connect(self) -> tuple[Any, Any, auth_credentials.Credentials]:
        credentials, project = self._credentials, self.project
        if credentials is None:
            if os.environ.get(EMULATOR_ENV):
                credentials = auth_credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
            else:
                credentials, found_project = google.auth.default(scopes=[_CLOUD_PLATFORM_SCOPE])
                project = project or found_project
        # The client reads STORAGE_EMULATOR_HOST itself and then talks to the emulator.
        client = StorageClient(project=project, credentials=credentials)
        # The library fetches bucket metadata in background threads for tracing
        # attributes (an extra GET per bucket, retried for minutes when GCS is down).
        # We trace nothing: switch it off. Every use checks the attribute for truth.
        if hasattr(client, "_bucket_metadata_cache"):
            client._bucket_metadata_cache = None
        return client, client.bucket(self.bucket_name), credentials

    async def close(self) -> None:
        client, executor = self._client, self._executor
        self._client = self._bucket = self._executor = None
        if client is not None:
            client.close()  # closes the HTTP session's pooled connections; no I/O
        if executor is not None:
            # Calls still running end on their own timeouts; nobody awaits them.
            executor.shutdown(wait=False, cancel_futures=True)

    # --- BlobStore ---------------------------------------------------------------

    async def ping(self) -> None:
        """List at most one object under the prefix: proves the bucket exists and is
        readable with the least permission the store needs (storage.objects.list)."""
        client, bucket = self._client, self._bucket

        def list_one() -> None:
            page = client.list_blobs(
                bucket,
                prefix=self.prefix or None,
                max_results=1,
                fields="items(name),nextPageToken",
                timeout=self.timeout,
                retry=self._retry,
            )
            next(iter(page), None)

        await self._run("ping", list_one, budget=self.timeout)

    async def put_if_absent(self, key: str, data: bytes, *, content_type: str) -> BlobRef:
        name = self.object_name(key)
        bucket = self._bucket

        def upload() -> bool:
            blob = bucket.blob(name)
            try:
                blob.upload_from_string(
                    data,
                    content_type=content_type,
                    if_generation_match=0,  # create-only, enforced by GCS
                    timeout=self.timeout,
                    retry=self._retry,
                )
            except api_exceptions.PreconditionFailed:
                # The object exists: a re-run, a concurrent writer, or a retried attempt
                # of this very call whose first answer was lost. Never overwritten.
                return False
            except api_exceptions.Forbidden:
                # Replacing an object needs storage.objects.delete: an account without it
                # may be refused before the precondition is checked. The blob exists all
                # the same if we may read it; otherwise the refusal stands.
                if blob.exists(timeout=self.timeout, retry=self._retry):
                    return False
                raise
            return True

        budget = self.timeout + len(data) / _MIN_UPLOAD_BYTES_PER_SECOND
        created = await self._run("put", upload, budget=budget)
        return BlobRef(key=key, uri=self.uri(name), created=created)

    async def get(self, key: str) -> bytes | None:
        name = self.object_name(key)
        bucket = self._bucket

        def download() -> bytes | None:
            try:
                data: bytes = bucket.blob(name).download_as_bytes(
                    timeout=self.timeout, retry=self._retry
                )
            except api_exceptions.NotFound:
                return None
            return data

        return await self._run("get", download, budget=self.timeout)

    # --- extras ------------------------------------------------------------------

    async def signed_url(self, key: str, *, expires_seconds: int = 3600) -> str | None:
        """A V4 signed GET URL for the blob, or None when the credentials cannot sign
        (anonymous, or end-user credentials). A service-account key signs locally; a
        token for a service account (Workload Identity) signs through IAM signBlob,
        which needs roles/iam.serviceAccountTokenCreator on that account."""
        if not 1 <= expires_seconds <= _MAX_SIGNED_URL_SECONDS:
            raise ValueError(f"expires_seconds must be within 1..{_MAX_SIGNED_URL_SECONDS}")
        name = self.object_name(key)
        bucket, credentials = self._bucket, self._credentials
        if bucket is None or credentials is None:
            raise StoreUnavailableError("gcs blob store is not open")
        expiration = datetime.timedelta(seconds=expires_seconds)

        def sign() -> str | None:
            blob = bucket.blob(name)
            if isinstance(credentials, auth_credentials.Signing):
                url: str = blob.generate_signed_url(
                    version="v4", method="GET", expiration=expiration, credentials=credentials
                )
                return url
            email = getattr(credentials, "service_account_email", None)
            if not email:
                return None
            if not credentials.valid or email == "default":
                # The metadata server gives the token and the account's real address.
                credentials.refresh(AuthRequest())  # type: ignore[no-untyped-call]
                email = getattr(credentials, "service_account_email", None)
            url = blob.generate_signed_url(
                version="v4",
                method="GET",
                expiration=expiration,
                service_account_email=email,
                access_token=credentials.token,
            )
            return url

        if isinstance(credentials, auth_credentials.AnonymousCredentials):
            return None
        return await self._run("sign", sign, budget=self.timeout)

    def object_name(self, key: str) -> str:
        """The object name of a key; ValueError for keys the local store refuses too,
        and for names GCS refuses."""
        name = self.prefix + str(_checked_key(key))  # normalised: "a//b" is "a/b"
        if "\r" in name or "\n" in name or "\x00" in name:
            raise ValueError(f"invalid blob key {key!r}")
        if len(name.encode()) > _MAX_OBJECT_NAME_BYTES:
            raise ValueError(f"blob key too long for GCS: {key[:60]!r}...")
        if name.startswith(".well-known/acme-challenge/"):
            raise ValueError(f"invalid blob key {key!r}")
        return name

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    # --- plumbing ----------------------------------------------------------------

    async def _run(self, op: str, fn: Callable[[], _T], *, budget: float | None) -> _T:
        executor = self._executor
        if executor is None or (op != "open" and self._bucket is None):
            raise StoreUnavailableError("gcs blob store is not open")
        bound = asyncio.timeout(budget)
        try:
            async with bound:
                return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except _BACKEND_ERRORS as exc:
            if bound.expired():
                raise StoreUnavailableError(f"gcs {op}: no answer within {budget} s") from None
            raise StoreUnavailableError(f"gcs {op}: {_describe(exc)}") from exc
