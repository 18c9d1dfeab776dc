"""`/v1/jobs`: submit, list, read, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from app.core.pagination import MAX_CURSOR_LENGTH, MAX_LIMIT, Page
from app.db.orm import JobStatus
from app.http.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from app.http.problems import problem_responses
from app.jobs import service
from app.jobs.schemas import JobCreate, JobRead

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(400, 403, 404, 409, 413, 422, 429),
    summary="Submit a job",
)
def submit_job(
    spec: JobCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: CurrentTenant,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="Same key + same spec = the same job, once."),
    ] = None,
) -> JobRead:
    """Queue a job; 202 with `Location`. A replay of an Idempotency-Key returns the first job."""
    job, _created = service.create_job(
        session=session,
        settings=settings,
        tenant_id=tenant_id,
        spec=spec,
        idempotency_key=idempotency_key,
    )
    session.commit()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.read_job(session, tenant_id, job)


@router.get("", response_model=Page[JobRead], summary="List jobs", responses=problem_responses(400))
def list_jobs(
    session: SessionDep,
    tenant_id: CurrentTenant,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Page[JobRead]:
    return service.list_jobs(session, tenant_id, status, limit, cursor)


@router.get("/{job_id}", response_model=JobRead, responses=problem_responses(404, 410))
def get_job(job_id: str, session: SessionDep, tenant_id: CurrentTenant) -> JobRead:
    """One job: status, progress, error, artifacts; 410 once retention expired it."""
    return service.get_job(session, tenant_id, job_id)


@router.delete(
    "/{job_id}", status_code=204, responses=problem_responses(404, 409), summary="Delete a job"
)
def delete_job(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Response:
    """Delete a finished job with its artifacts and report (409 `job_active` while it is queued
    or running: cancel it first). Stored bytes shared with other objects stay."""
    service.delete_job(session=session, storage=storage, tenant_id=tenant_id, job_id=job_id)
    session.commit()
    return Response(status_code=204)


@router.post("/{job_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_job(job_id: str, session: SessionDep, tenant_id: CurrentTenant) -> JobRead:
    """Cancel a queued job, or ask a running one to stop; 409 once finished."""
    job = service.cancel_job(session=session, tenant_id=tenant_id, job_id=job_id)
    session.commit()
    return service.read_job(session, tenant_id, job)
