"""Artifact downloads and the report, always through the database (never a client path)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy.orm import Session

from app.artifacts.schemas import Report
from app.core.errors import NotFound
from app.core.storage import Storage
from app.db.orm import Artifact
from app.http.deps import CurrentTenant, SessionDep, StorageDep
from app.http.problems import problem_responses
from app.jobs import repository
from app.jobs.service import get_job_or_raise

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])
REPORT_JSON, REPORT_HTML = "report.json", "report.html"
# The report page needs nothing from anywhere: no script, no fetch, inline styles and SVG only.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _artifact_path(
    session: Session, storage: Storage, tenant_id: str, job_id: str, name: str
) -> tuple[Artifact, Path]:
    get_job_or_raise(session, tenant_id, job_id)
    art = repository.get_artifact(session, tenant_id, job_id, name)
    if art is None:
        raise NotFound(f"Job {job_id} has no artifact {name!r}.")
    return art, storage.path_of(art.storage_key)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses=problem_responses(404),
    summary="Download an artifact",
)
def download_artifact(
    job_id: str, name: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> FileResponse:
    art, path = _artifact_path(session, storage, tenant_id, job_id, name)
    return FileResponse(
        path,
        media_type=art.media_type,
        filename=art.name,
        headers={"ETag": f'"{art.sha256}"', "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/{job_id}/report",
    response_model=Report,
    response_model_exclude_unset=True,
    responses=problem_responses(404),
    summary="The JSON report",
)
def get_report(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Report:
    """Baseline vs optimized, measured in one run: size, latency, fidelity, steps, verdict."""
    _art, path = _artifact_path(session, storage, tenant_id, job_id, REPORT_JSON)
    return Report.model_validate(json.loads(path.read_text()))


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    responses=problem_responses(404),
    summary="The HTML report",
)
def get_report_html(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> HTMLResponse:
    _art, path = _artifact_path(session, storage, tenant_id, job_id, REPORT_HTML)
    return HTMLResponse(
        path.read_text(),
        headers={"Content-Security-Policy": REPORT_CSP},
    )
