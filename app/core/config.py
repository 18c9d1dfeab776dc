"""Settings read from the flat ``MODELPRESS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.storage_url import StorageLocation, parse_storage_url

DEV_PEPPER = "modelpress-dev-pepper"
DEFAULT_TENANT_STORAGE_BYTES = 50 * 1024**3


class Settings(BaseSettings):
    """Every knob of ModelPress; the API, the worker and the CLI read the same ones."""

    model_config = SettingsConfigDict(env_prefix="MODELPRESS_", extra="ignore")

    data_dir: Path = Field(Path(".modelpress"), description="Embedded mode's data directory.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; SQLite in data_dir if unset."
    )
    broker_url: str | None = Field(
        None, description="Celery broker (Redis). Unset: the embedded database-backed dispatcher."
    )
    db_pool_size: int = Field(
        10,
        ge=1,
        le=200,
        description="Database connections each process keeps open. Postgres: as many again "
        "may open under a burst, and at most this many API requests hold a session at once (the "
        "rest wait their turn); max_connections must be >= processes x 2 x this. SQLite: no "
        "cap beyond it.",
    )
    storage_url: str | None = Field(
        None,
        description="Where models, datasets and artifacts live: a local path, file:///path, or "
        "s3://bucket/prefix (S3-compatible object storage; anything else refuses to start).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint for an s3:// storage URL (MinIO: http://minio:9000); unset: "
        "AWS. Credentials and region: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_DEFAULT_REGION.",
    )
    s3_multipart_threshold_bytes: int = Field(
        64 * 1024**2, ge=5 * 1024**2, description="Uploads to S3 above this go multipart."
    )
    s3_multipart_chunk_bytes: int = Field(
        64 * 1024**2, ge=5 * 1024**2, description="Part size of a multipart upload to S3."
    )
    scratch_dir: Path | None = Field(
        None,
        description="Local scratch of uploads, downloads and job attempts (always local, never "
        "shared). Unset: <storage root>/scratch, or <data_dir>/scratch with s3:// storage.",
    )
    max_upload_bytes: int = Field(
        4 * 1024**3,
        description="Upload limit; 413 above it. 4 GiB: an archive of a model over the 2 GiB "
        "protobuf limit fits, and a pass on it within the sandbox's memory limit.",
    )
    max_body_bytes: int = Field(
        1024**2,
        ge=1,
        description="Largest request body other than a multipart upload (JSON job specs): 413 "
        "above it, checked on Content-Length and on the bytes of a chunked body before parsing.",
    )
    external_data_threshold_bytes: int = Field(
        1_800_000_000,
        ge=0,
        description="An ONNX result whose tensors pass this size keeps them in an external data "
        "file and is delivered as a zip (`model.zip`); 0 forces it (tests).",
    )
    max_dataset_bytes: int = Field(512 * 1024**2, description="Uncompressed .npz limit.")
    auth_required: bool = Field(False, description="Require `Authorization: Bearer <key>`.")
    api_key_pepper: SecretStr = Field(
        SecretStr(DEV_PEPPER),
        description="Server secret mixed into key hashes. The built-in development value is "
        "refused at start with auth on and a non-loopback bind; changing it voids every key.",
    )
    allow_insecure_bind: bool = Field(
        False,
        description="Let `modelpress run`/`api` bind a non-loopback address with auth off "
        "(anyone who can reach the port then has full access).",
    )
    metrics_public: bool = Field(
        False, description="Serve `/metrics` without a key even when auth is required."
    )
    api_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="API server processes (uvicorn workers; `/metrics` then uses prometheus-"
        "client's multiprocess mode). Unset: 1 for `modelpress run`; for `modelpress api`, 2 "
        "where a broker is set (the rate limit is shared through Redis), else 1.",
    )

    # Abuse limits (RELIABILITY.md §4): each 0 turns its limit off.
    rate_limit_per_minute: int = Field(
        600,
        ge=0,
        description="Requests per minute per API key (per client address with auth off) on "
        "`/v1`; above it 429 with `Retry-After`. Shared through Redis when a broker is set.",
    )
    tenant_max_active_jobs: int = Field(
        20,
        ge=0,
        description="Queued plus running jobs per tenant; `POST /v1/jobs` above it is 429 "
        "`too_many_active_jobs` with `Retry-After`.",
    )
    tenant_storage_bytes: int | None = Field(
        None,
        ge=0,
        description="Bytes per tenant (its models, datasets and job artifacts); an upload over "
        "it is 403 `quota_exceeded`. Unset: 50 GiB with auth on, unlimited with auth off (one "
        "local user); 0: unlimited.",
    )
    auto_migrate: bool = Field(True, description="Run `alembic upgrade head` at start.")
    cuda_enabled: bool = Field(
        False,
        description="A CUDA worker pool exists (`modelpress worker --device cuda`, or an embedded "
        "worker on a machine with a GPU): jobs may ask for `device: cuda`.",
    )

    # Sandbox (per-job child process) limits.
    sandbox_memory_mb: int = Field(12288, description="Address-space cap of a job's child.")
    sandbox_cpu_seconds: int = Field(3600, description="CPU-time cap of a job's child.")
    sandbox_wall_seconds: int = Field(1800, description="Wall-clock cap of a job's child.")
    sandbox_file_mb: int = Field(4096, description="Largest file a job's child may write.")
    sandbox_threads: int = Field(0, description="Intra-op threads in the child; 0 = all cores.")
    sandbox_prefork: bool = Field(
        True,
        description="Fork each job's child from a template that imported torch and onnx once "
        "per worker (worker/sandbox/zygote.py); false starts every child as a fresh process.",
    )
    sandbox_isolation: Literal["auto", "required", "off"] = Field(
        "auto",
        description="The child's jail (worker/sandbox/jail.py): its own uid, no network, only "
        "its scratch writable. `auto` builds it where the worker runs as root and warns loudly "
        "where it cannot; `required` fails jobs instead; `off` runs without it (tests only).",
    )
    sandbox_uid_base: int = Field(
        200_000,
        ge=1000,
        description="Jailed children run as uid/gid base + the supervisor's pid: one uid per "
        "concurrent child, none of them a real account.",
    )
    inspect_wall_seconds: int = Field(120, description="Wall-clock cap of a model inspection.")
    inspect_max_attempts: int = Field(
        3,
        ge=1,
        description="Inspections of one model started before it is rejected "
        "`inspection_failed` (one whose worker keeps dying can never block the queue).",
    )

    # Job supervision.
    job_lease_seconds: int = Field(60, description="A running job whose lease lapses is requeued.")
    job_max_attempts: int = Field(2, description="Attempts before a job fails `worker_lost`.")
    redispatch_after_seconds: int = Field(30, description="Re-publish jobs queued this long.")
    poll_interval_seconds: float = Field(0.5, description="Embedded worker's polling interval.")

    retention_days: float = Field(
        0,
        ge=0,
        description="Jobs (from when they finished), models and datasets (from their upload) "
        "older than this expire: their bytes go, reads answer 410 Gone. 0 keeps everything.",
    )
    # Blob lifetimes and integrity (app/blobs/service.py).
    blob_grace_seconds: float = Field(
        600,
        description="Unreferenced blobs and idle scratch younger than this are kept: an upload "
        "or a job may be about to commit a row for them.",
    )
    gc_interval_seconds: float = Field(
        600, description="How often the housekeeping removes unreferenced blobs and scratch."
    )
    scrub_interval_seconds: float = Field(
        86400, description="How often every stored blob is re-hashed (0 turns the scrub off)."
    )
    verify_download_max_bytes: int = Field(
        64 * 1024**2,
        description="Downloads and job staging re-hash blobs up to this size (every blob's "
        "size is always checked; larger ones rely on the scrub).",
    )

    # Webhooks (`callback_url`, app/webhooks/).
    webhook_allow_private: bool = Field(
        False,
        description="Allow callback URLs that resolve to loopback, private, link-local (cloud "
        "metadata), CGNAT, multicast or unspecified addresses (off: 422 at submit, refused at "
        "send).",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of `X-ModelPress-Signature`. Unset: "
        "hex(HMAC-SHA256(api_key_pepper, 'modelpress-webhook-secret')).",
    )
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Connect, write and read timeout of one delivery."
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="Deliveries tried this often, then `dead` with the last error."
    )
    webhook_backoff_seconds: float = Field(
        30.0, ge=0, description="Delay before the first retry; it doubles at each further one."
    )
    webhook_backoff_max_seconds: float = Field(
        3600.0, ge=0, description="The longest delay between two attempts."
    )
    webhook_per_tick: int = Field(
        20, ge=1, le=1000, description="Deliveries the housekeeping tick sends at most per round."
    )

    # MLflow tracking (app/tracking/; the worker side needs the `mlflow` extra). Runs go
    # through the webhook outbox, so they retry with the webhook_* attempts and backoff.
    mlflow_tracking_uri: str | None = Field(
        None,
        max_length=2048,
        description="Log every finished job as an MLflow run on this tracking server "
        "(e.g. http://mlflow:5000). Unset: no MLflow.",
    )
    mlflow_experiment: str = Field(
        "modelpress", min_length=1, max_length=500, description="The MLflow experiment's name."
    )
    mlflow_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Timeout of one MLflow HTTP request (no retry inside)."
    )

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'modelpress.db').resolve()}"

    @field_validator("storage_url")
    @classmethod
    def _storage_url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_storage_url(value)  # a bad URL refuses to start, with the accepted forms
        return value

    @property
    def storage_location(self) -> StorageLocation:
        """The parsed storage URL (a local directory by default)."""
        if self.storage_url:
            return parse_storage_url(self.storage_url)
        return StorageLocation("file", path=self.data_dir / "storage")

    @property
    def storage_root(self) -> Path:
        """The local directory of the blobs; with s3:// storage, the data directory (which then
        holds only scratch and, in the embedded mode, the SQLite file)."""
        location = self.storage_location
        return location.path if location.path is not None else self.data_dir

    @property
    def scratch_root(self) -> Path:
        """Per-upload and per-attempt scratch directories: always on the local disk (by
        default the storage's own, so that a local publish is a rename)."""
        if self.scratch_dir is not None:
            return self.scratch_dir
        if self.storage_location.scheme == "s3":
            return self.data_dir / "scratch"
        return self.storage_root / "scratch"

    @property
    def storage_quota_bytes(self) -> int | None:
        """The per-tenant storage quota in force, None for unlimited."""
        quota = self.tenant_storage_bytes
        if quota is None:
            return DEFAULT_TENANT_STORAGE_BYTES if self.auth_required else None
        return quota or None

    @property
    def embedded_queue(self) -> bool:
        """True when no broker is configured: the local worker polls the database."""
        return not self.broker_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return Settings()
