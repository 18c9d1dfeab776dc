"""`/v1/jobs`: submit, list, read, cancel."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from app.core.pagination import MAX_LIMIT, Page, page_of
from app.http.deps import CurrentTenant, SessionDep, SettingsDep
from app.http.problems import problem_responses
from app.jobs import repository, service
from app.jobs.schemas import JobCreate, JobRead

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
StatusFilter = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(404, 409, 422),
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
    return service.to_read(job, repository.artifacts_of(session, [job.id])[job.id])


@router.get("", response_model=Page[JobRead], summary="List jobs")
def list_jobs(
    session: SessionDep,
    tenant_id: CurrentTenant,
    status: StatusFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: str | None = None,
) -> Page[JobRead]:
    rows, next_cursor = page_of(
        repository.list_page(session, tenant_id, status, limit, cursor), limit
    )
    arts = repository.artifacts_of(session, [j.id for j in rows])
    return Page[JobRead](
        items=[service.to_read(j, arts[j.id]) for j in rows], next_cursor=next_cursor
    )


@router.get("/{job_id}", response_model=JobRead, responses=problem_responses(404))
def get_job(job_id: str, session: SessionDep, tenant_id: CurrentTenant) -> JobRead:
    job = service.get_job_or_raise(session, tenant_id, job_id)
    return service.to_read(job, repository.artifacts_of(session, [job.id])[job.id])


@router.post("/{job_id}/cancel", response_model=JobRead, responses=problem_responses(404, 409))
def cancel_job(job_id: str, session: SessionDep, tenant_id: CurrentTenant) -> JobRead:
    """Cancel a queued job, or ask a running one to stop; 409 once finished."""
    job = service.cancel_job(session=session, tenant_id=tenant_id, job_id=job_id)
    session.commit()
    return service.to_read(job, repository.artifacts_of(session, [job.id])[job.id])
