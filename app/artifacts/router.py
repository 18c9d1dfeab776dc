"""Artifact downloads and the report, always through the database (never a client path)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, HTMLResponse

from app.artifacts import service
from app.artifacts.schemas import REPORT_CSP, Report
from app.http.deps import CurrentTenant, SessionDep, StorageDep
from app.http.downloads import blob_response
from app.http.problems import problem_responses

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The artifact's bytes, served with its `media_type` (the model: "
            "`application/octet-stream`, or `application/zip` with external data; reports: "
            "`application/json`, `text/html`); `ETag` is their sha256.",
            "content": {  # octet-stream first: the one generated clients read (as bytes)
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "*/*": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problem_responses(
            404,
            410,
            500,
            notes={
                404: "No such job for this tenant, or the job has no artifact of that name.",
                500: "The stored bytes no longer match their sha256 (`artifact_corrupt`): they "
                "are quarantined and never served.",
            },
        ),
    },
    summary="Download an artifact",
)
def download_artifact(
    job_id: str, name: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Response:
    """The stored bytes, checked against their sha256 first: a blob that no longer matches is
    quarantined and answers 500 `artifact_corrupt`, never its bytes."""
    art, blob = service.get_artifact_file(
        session=session, storage=storage, tenant_id=tenant_id, job_id=job_id, name=name
    )
    return blob_response(
        blob,
        media_type=art.media_type,
        filename=art.name,
        headers={"ETag": f'"{art.sha256}"', "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/{job_id}/report",
    response_model=Report,
    response_model_exclude_unset=True,
    responses=problem_responses(
        404, 410, 500, notes={404: "No such job for this tenant, or it has no report (yet)."}
    ),
    summary="The JSON report",
    response_description="The report: baseline and optimized, measured in one run.",
)
def get_report(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Report:
    """Baseline vs optimized, measured in one run: size, latency, fidelity, steps, verdict."""
    return service.get_report(session=session, storage=storage, tenant_id=tenant_id, job_id=job_id)


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    responses=problem_responses(
        404, 410, 500, notes={404: "No such job for this tenant, or it has no report (yet)."}
    ),
    summary="The HTML report",
    response_description="The report page.",
)
def get_report_html(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> HTMLResponse:
    """The report as one self-contained page (inline SVG charts, no script, a strict CSP)."""
    page = service.get_report_html(
        session=session, storage=storage, tenant_id=tenant_id, job_id=job_id
    )
    return HTMLResponse(
        page,
        headers={"Content-Security-Policy": REPORT_CSP},
    )
