"""Artifacts and reports of a job, always found through the database (never a client path)."""

from __future__ import annotations

import json
from typing import NamedTuple

from sqlalchemy.orm import Session

from app.artifacts import repository
from app.artifacts.schemas import Report
from app.core.config import get_settings
from app.core.errors import NotFound
from app.core.storage import BlobDownload, Storage
from app.db.orm import Artifact
from app.jobs.service import get_job_or_raise

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


class StoredArtifact(NamedTuple):
    """An artifact's row and its checked bytes (a local file or an object-storage stream)."""

    row: Artifact
    blob: BlobDownload


def get_artifact_file(
    *, session: Session, storage: Storage, tenant_id: str, job_id: str, name: str
) -> StoredArtifact:
    """The artifact `name` of one of the tenant's jobs.

    Raises:
        NotFound: no such job for this tenant, or the job has no artifact of that name.
        ArtifactCorrupt: the stored bytes no longer match their hash (they are never served).
    """
    get_job_or_raise(session, tenant_id, job_id)
    art = repository.get(session, tenant_id, job_id, name)
    if art is None:
        raise NotFound(f"Job {job_id} has no artifact {name!r}.")
    limit = get_settings().verify_download_max_bytes
    return StoredArtifact(art, storage.open_verified(art.storage_key, art.size_bytes, limit))


def get_report(*, session: Session, storage: Storage, tenant_id: str, job_id: str) -> Report:
    """The job's JSON report, read in its documented shape."""
    stored = get_artifact_file(
        session=session, storage=storage, tenant_id=tenant_id, job_id=job_id, name=REPORT_JSON
    )
    return Report.model_validate(json.loads(stored.blob.read_bytes()))


def get_report_html(*, session: Session, storage: Storage, tenant_id: str, job_id: str) -> str:
    """The job's HTML report page."""
    stored = get_artifact_file(
        session=session, storage=storage, tenant_id=tenant_id, job_id=job_id, name=REPORT_HTML
    )
    return stored.blob.read_bytes().decode()
