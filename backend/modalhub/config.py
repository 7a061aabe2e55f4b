"""Settings, read from the environment (prefix ``MODALHUB_``) and the seed's names."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modalhub_sdk.signing import parse_secrets

# Values copied from documentation that must never protect a real deployment.
PLACEHOLDER_SECRETS = {"your-webhook-secret-here", "your-webhook-secret", "changeme", "secret"}


class StoreKind(StrEnum):
    SQLITE = "sqlite"
    FIRESTORE = "firestore"


class BlobKind(StrEnum):
    LOCAL = "local"
    GCS = "gcs"


class SqliteSynchronous(StrEnum):
    # FULL fsyncs every (group) commit: survives power loss. NORMAL survives a
    # process crash (kill -9) but may lose the last commits on power loss.
    FULL = "FULL"
    NORMAL = "NORMAL"


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODALHUB_", extra="ignore", populate_by_name=True, frozen=True
    )

    # --- callbacks -------------------------------------------------------
    webhook_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices(
            "MODALHUB_WEBHOOK_SECRET", "MODAL_WEBHOOK_SECRET", "webhook_secrets"
        ),
        description="One or several signing secrets (space/comma separated); any verifies.",
    )
    webhook_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "MODALHUB_WEBHOOK_BASE_URL", "WEBHOOK_BASE_URL", "webhook_base_url"
        ),
    )
    dry_run: bool = Field(
        default=False, validation_alias=AliasChoices("MODALHUB_DRY_RUN", "DRY_RUN", "dry_run")
    )
    signature_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    # --- operators ---------------------------------------------------------
    admin_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- backends ----------------------------------------------------------
    store: StoreKind = StoreKind.SQLITE
    blobs: BlobKind = BlobKind.LOCAL
    data_dir: Path = Path(".modalhub")
    sqlite_synchronous: SqliteSynchronous = SqliteSynchronous.NORMAL

    # --- Google Cloud (MODALHUB_STORE=firestore, MODALHUB_BLOBS=gcs) ------------
    # Credentials come from the environment: Workload Identity in the cluster,
    # GOOGLE_APPLICATION_CREDENTIALS elsewhere, FIRESTORE_EMULATOR_HOST and
    # STORAGE_EMULATOR_HOST for the emulators.
    gcp_project: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "MODALHUB_GCP_PROJECT", "GOOGLE_CLOUD_PROJECT", "gcp_project"
        ),
    )
    firestore_database: str = "(default)"
    # Collection names start with this, so several environments can share a project.
    firestore_prefix: str = Field(default="modalhub_", pattern=r"^[A-Za-z0-9_\-]*$")
    gcs_bucket: str | None = None
    gcs_prefix: str = Field(default="", pattern=r"^([A-Za-z0-9_.\-]+/)*$")
    # Time-to-live for Firestore's TTL policy (the expire_at field).
    inbox_retention_days: float = Field(default=7, gt=0)
    job_retention_days: float = Field(default=30, gt=0)
    # A backend call slower than this counts as unavailable: ingest answers 503.
    backend_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    # --- execution ------------------------------------------------------------
    executor: Literal["local", "modal"] = "local"
    # Modal app files the local executor loads (what you would `modal deploy`).
    local_apps: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    poll_interval_seconds: float = Field(default=10.0, gt=0)
    # An EXPIRED answer settles a job only when it has been silent this long.
    poll_expired_grace_seconds: float = Field(default=600.0, ge=0)

    # --- background processing ----------------------------------------------
    sweep_interval_seconds: float = Field(default=15.0, gt=0)
    # Small batches keep the SQLite write lock short for the API process beside the worker.
    process_batch_size: int = Field(default=64, ge=1, le=5000)
    process_gather_seconds: float = Field(default=0.02, ge=0, le=5)
    # inline: each API process applies entries itself. worker: `modalhub serve` also
    # starts one `modalhub worker` process that does it, so ingestion keeps a core to
    # itself. external: the API never applies entries; run `modalhub worker` yourself.
    processor: Literal["inline", "worker", "external"] = "worker"
    worker_poll_seconds: float = Field(default=0.05, gt=0, le=60)
    # `modalhub worker` serves its own Prometheus metrics (processing, notifications) on
    # this port when set; the API's /metrics covers only the API process.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    processing_stall_seconds: float = Field(default=120.0, gt=0)

    # --- notifications to a job's notify_url -------------------------------------
    # Signs what the hub sends to subscribers (Standard Webhooks). Not the callback
    # secret: a subscriber that knows it could forge callbacks. Without one, a job
    # submitted with a notify_url is refused.
    notify_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices(
            "MODALHUB_NOTIFY_SECRET", "MODALHUB_NOTIFY_SECRETS", "notify_secrets"
        ),
    )
    notify_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Attempts, the first at once, then after notify_retry_seconds, doubling each time
    # up to notify_retry_max_seconds (with jitter): by default about 2.4 hours in all.
    notify_max_attempts: int = Field(default=12, ge=1, le=100)
    notify_retry_seconds: float = Field(default=5.0, gt=0)
    notify_retry_max_seconds: float = Field(default=3600.0, gt=0)
    # How often the processor looks for due notifications (it is also woken whenever
    # it finishes a job that has one).
    notify_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    notify_concurrency: int = Field(default=16, ge=1, le=256)

    # --- logging -------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator(
        "webhook_secrets", "notify_secrets", "admin_tokens", "local_apps", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("webhook_secrets", "notify_secrets")
    @classmethod
    def _no_placeholders(cls, secrets: list[str]) -> list[str]:
        for secret in secrets:
            if secret.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{secret!r} is a documentation placeholder, not a secret")
        parse_secrets(secrets) if secrets else None  # malformed whsec_ fails here, not per request
        return secrets

    @field_validator("admin_tokens")
    @classmethod
    def _long_tokens(cls, tokens: list[str]) -> list[str]:
        for token in tokens:
            if len(token) < 16:
                raise ValueError("admin tokens must be at least 16 characters")
        return tokens

    @model_validator(mode="after")
    def _backend_settings(self) -> Settings:
        if self.store is StoreKind.FIRESTORE and not self.gcp_project:
            raise ValueError("MODALHUB_STORE=firestore needs MODALHUB_GCP_PROJECT")
        if self.blobs is BlobKind.GCS and not self.gcs_bucket:
            raise ValueError("MODALHUB_BLOBS=gcs needs MODALHUB_GCS_BUCKET")
        if (
            self.notify_secrets
            and self.webhook_secrets
            and set(self.notify_keys) & set(self.signing_keys)
        ):
            raise ValueError(
                "MODALHUB_NOTIFY_SECRET must differ from the webhook secret: subscribers"
                " that hold it could forge callbacks"
            )
        return self

    @cached_property
    def signing_keys(self) -> list[bytes]:
        return parse_secrets(self.webhook_secrets)

    @cached_property
    def notify_keys(self) -> list[bytes]:
        return parse_secrets(self.notify_secrets) if self.notify_secrets else []

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "modalhub.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"
