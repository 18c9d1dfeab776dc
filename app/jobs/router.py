"""`/v1/jobs`: submit, list, read, cancel, delete."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.core.errors import BadRequest
from app.core.pagination import MAX_CURSOR_LENGTH, MAX_LIMIT, Page
from app.db.orm import JobStatus
from app.http.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from app.http.problems import problem_responses
from app.jobs import events, service
from app.jobs.schemas import JOB_EXAMPLES, JobCreate, JobRead

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    responses=problem_responses(
        400,
        403,
        409,
        410,
        413,
        422,
        429,
        notes={
            400: "A body that is not UTF-8 (`malformed_body`; invalid JSON is a 422), or an "
            "invalid Content-Length (`invalid_content_length`).",
            403: "The tenant's storage is full (`quota_exceeded`): no room for the results.",
            409: "This Idempotency-Key came with a different spec (`idempotency_conflict`).",
            410: "The model or a dataset of the spec expired (`expired`, with `pointer`).",
            413: "The spec is over MODELPRESS_MAX_BODY_BYTES (`payload_too_large`).",
            422: "`validation_error` (unknown field, out of range, ...: `errors`), or "
            "`spec_invalid` (with `pointer`): no such model or dataset, a model not `ready`, "
            "a step that cannot run at its point of the chain, a refused `callback_url`, "
            "`device: cuda` without a CUDA pool.",
            429: "Rate limit (`rate_limited`), or the tenant already has "
            "MODELPRESS_TENANT_MAX_ACTIVE_JOBS queued or running (`too_many_active_jobs`); "
            "`Retry-After` says when to retry.",
        },
    ),
    openapi_extra={"requestBody": {"content": {"application/json": {"examples": JOB_EXAMPLES}}}},
    summary="Submit a job",
    response_description="The queued job (or, for a replayed Idempotency-Key, the first one); "
    "`Location` is its URL.",
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


@router.get(
    "",
    response_model=Page[JobRead],
    summary="List jobs",
    response_description="One page of jobs.",
    responses=problem_responses(400, 422),
)
def list_jobs(
    session: SessionDep,
    tenant_id: CurrentTenant,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Page[JobRead]:
    """The tenant's jobs, newest first, optionally of one `status`, a page at a time."""
    return service.list_jobs(session, tenant_id, status, limit, cursor)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    responses=problem_responses(404, 410),
    summary="Read a job",
    response_description="The job.",
)
def get_job(job_id: str, session: SessionDep, tenant_id: CurrentTenant) -> JobRead:
    """One job: status, progress, error, artifacts; 410 once retention expired it."""
    return service.get_job(session, tenant_id, job_id)


@router.delete(
    "/{job_id}",
    status_code=204,
    responses=problem_responses(
        404, 409, notes={409: "The job is queued or running (`job_active`): cancel it first."}
    ),
    summary="Delete a job",
    response_description="Deleted.",
)
def delete_job(
    job_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Response:
    """Delete a finished job with its artifacts and report (409 `job_active` while it is queued
    or running: cancel it first). Stored bytes shared with other objects stay."""
    service.delete_job(session=session, storage=storage, tenant_id=tenant_id, job_id=job_id)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses=problem_responses(
        404, 409, 410, notes={409: "The job already finished (`already_terminal`)."}
    ),
    summary="Cancel a job",
    response_description="The job: `cancelled`, or `running` with `cancel_requested`.",
)
def cancel_job(job_id: str, session: SessionDep, tenant_id: CurrentTenant) -> JobRead:
    """Cancel a queued job, or ask a running one to stop; 409 once finished."""
    job = service.cancel_job(session=session, tenant_id=tenant_id, job_id=job_id)
    session.commit()
    return service.read_job(session, tenant_id, job)


# The event stream's pace: how often it looks for new events (a short read transaction each
# time, no session held in between) and how long it may stay silent before a comment line.
# Tests shorten them.
EVENTS_POLL_SECONDS = 0.5
EVENTS_HEARTBEAT_SECONDS = 15.0
SSE_MEDIA_TYPE = "text/event-stream"
EVENTS_DESCRIPTION = """Server-sent events (`text/event-stream`) of one job, from its submission
to its end, read from the database (any API replica serves any job).

Each event has an `id` (increasing per job), an `event` name and JSON `data`:

- `status`: `{"id", "status", "attempt"?, "error"?}`: queued at submit, running at each claim,
  queued again when a worker is lost, and the terminal `succeeded`, `failed` or `cancelled`;
- `step`: `{"index", "op", "name", "phase": "started" | "finished", "wall_s"?}`;
- `progress`: `{"fraction", "message", "step"?}`, at most about once a second, on change;
- `log`: `{"message", "source": "worker" | "job", "level", "ts"}` (`ts`: epoch seconds): the
  worker's lines about the job and the job's own (sandboxed) log lines;
- `verdict`: the report's verdict, just before the `succeeded` status.

A comment line (`: heartbeat`) comes every 15 s of silence. The stream ends after the terminal
`status` (at once for a finished job, after replaying its events). A client that lost the stream
sends `Last-Event-ID` (or `?after=`) and gets only the events after that id."""


def _sse(seq: int, event: str, data: dict[str, object]) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"id: {seq}\nevent: {event}\ndata: {text}\n\n"


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    if last_event_id is None or not last_event_id.strip():
        return after or 0
    try:
        value = int(last_event_id.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise BadRequest(
            "Last-Event-ID must be an event id this stream sent (a non-negative integer).",
            code="invalid_last_event_id",
        )
    return max(value, after or 0)


async def _stream(request: Request, tenant_id: str, job_id: str, seq: int) -> AsyncIterator[str]:
    quiet_since = time.monotonic()
    yield ": stream of job events\n\n"  # headers and a first byte out at once
    while True:
        rows, over = await run_in_threadpool(service.poll_events, tenant_id, job_id, seq)
        for seq, event, data in rows:
            yield _sse(seq, event, data)
            quiet_since = time.monotonic()
            if events.is_terminal_event(event, data):
                return
        if over:
            return
        if rows:
            continue  # a full page: read on without waiting
        if time.monotonic() - quiet_since >= EVENTS_HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            quiet_since = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENTS_POLL_SECONDS)


@router.get(
    "/{job_id}/events",
    summary="Follow a job's events (server-sent events)",
    description=EVENTS_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The job's event stream, until its terminal `status`.",
            "content": {
                SSE_MEDIA_TYPE: {
                    "schema": {"type": "string"},
                    "example": 'id: 1\nevent: status\ndata: {"id":"…","status":"queued"}\n\n',
                }
            },
        },
        **problem_responses(400, 404, 410),
    },
)
def job_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    tenant_id: CurrentTenant,
    last_event_id: Annotated[
        str | None,
        Header(max_length=32, description="Resume: only the events after this id."),
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, description="Like `Last-Event-ID`, for clients without it.")
    ] = None,
) -> StreamingResponse:
    service.check_events_readable(session, tenant_id, job_id)
    seq = _resume_point(last_event_id, after)
    session.close()  # the stream reads in short transactions of its own
    return StreamingResponse(
        _stream(request, tenant_id, job_id, seq),
        media_type=SSE_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{job_id}/logs",
    summary="Read a job's log",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Log lines, oldest first: UTC time, source (`worker` or `job`), "
            "level, message.",
            "content": {
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "2026-12-01T15:30:00.120Z worker INFO claimed by host:41 "
                    "(attempt 1)\n",
                }
            },
        },
        **problem_responses(404, 410),
    },
)
def job_logs(job_id: str, session: SessionDep, tenant_id: CurrentTenant) -> PlainTextResponse:
    """The job's log as text: the worker's lines about it (claimed, staged, published, failed
    and why) and the job's own log lines from its sandbox, at most the last 1 MB."""
    return PlainTextResponse(service.job_logs(session, tenant_id, job_id))
