"""Artifact downloads and the report, always through the database (never a client path)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from app.artifacts import service
from app.artifacts.schemas import REPORT_CSP, Report
from app.http.deps import CurrentTenant, SessionDep, StorageDep
from app.http.problems import problem_responses

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses=problem_responses(404, 500),
    summary="Download an artifact",
)
def download_artifact(
    job_id: str, name: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> FileResponse:
    """The stored bytes, checked against their sha256 first: a blob that no longer matches is
    quarantined and answers 500 `artifact_corrupt`, never its bytes."""
    art, path = service.get_artifact_file(
        session=session, storage=storage, tenant_id=tenant_id, job_id=job_id, name=name
    )
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
    responses=problem_responses(404, 500),
    summary="The JSON report",
)
def get_report(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Report:
    """Baseline vs optimized, measured in one run: size, latency, fidelity, steps, verdict."""
    return service.get_report(session=session, storage=storage, tenant_id=tenant_id, job_id=job_id)


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    responses=problem_responses(404, 500),
    summary="The HTML report",
)
def get_report_html(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> HTMLResponse:
    page = service.get_report_html(
        session=session, storage=storage, tenant_id=tenant_id, job_id=job_id
    )
    return HTMLResponse(
        page,
        headers={"Content-Security-Policy": REPORT_CSP},
    )
