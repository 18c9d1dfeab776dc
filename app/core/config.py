"""Settings read from the flat ``MODELPRESS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    storage_url: str | None = Field(None, description="Artifact storage root (a local path).")
    max_upload_bytes: int = Field(2 * 1024**3, description="Upload limit; 413 above it.")
    external_data_threshold_bytes: int = Field(
        1_800_000_000,
        ge=0,
        description="An ONNX result whose tensors pass this size keeps them in an external data "
        "file and is delivered as a zip (`model.zip`); 0 forces it (tests).",
    )
    max_dataset_bytes: int = Field(512 * 1024**2, description="Uncompressed .npz limit.")
    auth_required: bool = Field(False, description="Require `Authorization: Bearer <key>`.")
    api_key_pepper: SecretStr = Field(
        SecretStr("modelpress-dev-pepper"), description="Server secret mixed into key hashes."
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
    inspect_wall_seconds: int = Field(120, description="Wall-clock cap of a model inspection.")

    # Job supervision.
    job_lease_seconds: int = Field(60, description="A running job whose lease lapses is requeued.")
    job_max_attempts: int = Field(2, description="Attempts before a job fails `worker_lost`.")
    redispatch_after_seconds: int = Field(30, description="Re-publish jobs queued this long.")
    poll_interval_seconds: float = Field(0.5, description="Embedded worker's polling interval.")

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

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'modelpress.db').resolve()}"

    @property
    def storage_root(self) -> Path:
        """Where artifacts, models and datasets live."""
        if self.storage_url:
            return Path(self.storage_url)
        return self.data_dir / "storage"

    @property
    def scratch_root(self) -> Path:
        """Per-upload and per-attempt scratch directories (same filesystem as storage)."""
        return self.storage_root / "scratch"

    @property
    def embedded_queue(self) -> bool:
        """True when no broker is configured: the local worker polls the database."""
        return not self.broker_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return Settings()
