"""The rules of jobs: submission checks, idempotency, cancellation, the public view."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.artifacts import repository as artifacts
from app.blobs.service import release_after_commit
from app.core.config import Settings, get_settings
from app.core.errors import Conflict, Gone, NotFound, SpecInvalid
from app.core.pagination import Page, page_of
from app.core.queue import RUN_JOB, job_queue, publish_after_commit
from app.core.storage import Storage
from app.datasets import repository as datasets
from app.db.base import utcnow
from app.db.orm import Artifact, Job, JobStatus, MlModel, ModelStatus
from app.db.orm.job import TERMINAL
from app.db.session import read_sessionmaker
from app.jobs import events, repository
from app.jobs.schemas import (
    ArtifactRead,
    JobCreate,
    JobRead,
    dataset_refs,
    has_fidelity_target,
)
from app.metrics import service as job_metrics
from app.ml_models import repository as models
from app.passes.base import ModelInfo
from app.passes.spec import check_chain
from app.tenants.service import check_can_submit
from app.webhooks import service as webhooks


def spec_digest(spec: JobCreate) -> str:
    """The sha256 of the spec's canonical JSON: what an Idempotency-Key replay must match."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_model(session: Session, tenant_id: str, spec: JobCreate) -> MlModel:
    model = models.get(session, tenant_id, spec.model_id)
    if model is None:
        raise SpecInvalid(f"No model {spec.model_id}.", pointer="/model_id")
    if model.expired_at is not None:
        raise Gone(f"Model {model.id} expired (retention).", pointer="/model_id")
    if model.status != ModelStatus.ready:
        raise SpecInvalid(
            f"Model {model.id} is `{model.status}`, not `ready`.", pointer="/model_id"
        )
    return model


def _check_datasets(session: Session, tenant_id: str, spec: JobCreate) -> None:
    for pointer, dataset_id in dataset_refs(spec.model_dump(mode="json")):
        dataset = datasets.get(session, tenant_id, dataset_id)
        if dataset is None:
            raise SpecInvalid(f"No dataset {dataset_id}.", pointer=pointer)
        if dataset.expired_at is not None:
            raise Gone(f"Dataset {dataset_id} expired (retention).", pointer=pointer)


def _check_spec(session: Session, settings: Settings, tenant_id: str, spec: JobCreate) -> MlModel:
    """The spec's model, once the device, the model, the datasets and the step chain check out."""
    if spec.device == "cuda" and not settings.cuda_enabled:
        raise SpecInvalid(
            "No CUDA worker pool is configured here (MODELPRESS_CUDA_ENABLED).", pointer="/device"
        )
    model = _check_model(session, tenant_id, spec)
    _check_datasets(session, tenant_id, spec)
    if spec.callback_url is not None:
        webhooks.check_callback(spec.callback_url, settings)
    if spec.steps is not None:
        info = ModelInfo(model.format, model.inputs or [], model.outputs or [])
        check_chain(list(spec.steps), info)
        _check_mixed_precision(spec)
    return model


def _check_mixed_precision(spec: JobCreate) -> None:
    """`keep_float: auto` meets the job's fidelity target: a step that asks for it needs one
    (`min_cosine`, or `max_accuracy_drop` with an `evaluation`)."""
    for index, step in enumerate(spec.steps or []):
        wants = getattr(step, "keep_float", None) == "auto"
        if wants and not has_fidelity_target(spec):
            raise SpecInvalid(
                "`keep_float: auto` keeps the fewest nodes float that meet the job's fidelity "
                "target: give `constraints.min_cosine` (e.g. 0.995), or "
                "`constraints.max_accuracy_drop` with an `evaluation` (a labelled dataset).",
                pointer=f"/steps/{index}/keep_float",
            )


def create_job(
    *,
    session: Session,
    settings: Settings,
    tenant_id: str,
    spec: JobCreate,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Validate a spec against its model and queue it; returns (job, created).

    Raises:
        SpecInvalid: model or dataset missing, or a step that cannot run at its point.
        Conflict: the idempotency key was used with a different spec.
        TooManyRequests: `too_many_active_jobs` (MODELPRESS_TENANT_MAX_ACTIVE_JOBS).
        QuotaExceeded: the tenant's storage is full.
    """
    digest = spec_digest(spec)
    if idempotency_key:
        existing = repository.get_by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest), False
    model = _check_spec(session, settings, tenant_id, spec)
    check_can_submit(session, settings, tenant_id)  # active-jobs limit, storage quota
    job = Job(
        tenant_id=tenant_id,
        model_id=model.id,
        spec=spec.model_dump(mode="json"),
        spec_sha256=digest,
        idempotency_key=idempotency_key,
        status=JobStatus.queued,
        progress={"fraction": 0.0, "message": "queued"},
        dispatched_at=utcnow(),
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent request with the same key won the insert.
        session.rollback()
        assert idempotency_key is not None
        existing = repository.get_by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, digest), False
    events.record_status(session, job.id, JobStatus.queued, attempt=0)
    publish_after_commit(session, RUN_JOB, job.id, job_queue(spec.device))
    return job, True


def _replay(existing: Job, digest: str) -> Job:
    if existing.spec_sha256 != digest:
        raise Conflict(
            "This Idempotency-Key was used with a different job spec.", code="idempotency_conflict"
        )
    return existing


def get_job_or_raise(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, or NotFound (another tenant's job looks like a missing one).

    Raises:
        NotFound: no such job for this tenant.
        Gone: retention expired the job (its artifacts and report are gone).
    """
    job = repository.get(session, tenant_id, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if job.expired_at is not None:
        raise Gone(f"Job {job_id} expired on {job.expired_at:%Y-%m-%d} (retention).")
    return job


def delete_job(*, session: Session, storage: Storage, tenant_id: str, job_id: str) -> None:
    """Delete a finished job, its artifacts and its report (an expired job's row too).

    Their bytes go after the commit, once no row of any kind refers to them (app/blobs).

    Raises:
        NotFound: no such job for this tenant.
        Conflict: the job is queued or running (cancel it first).
    """
    job = repository.get(session, tenant_id, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if job.status not in TERMINAL:
        raise Conflict(
            f"Job {job.id} is {job.status}: cancel it first, then delete it.", code="job_active"
        )
    grace = get_settings().blob_grace_seconds
    events.delete_for(session, [job.id])  # a deleted job's events go with it
    for key in set(repository.delete_with_artifacts(session, job.id)):
        release_after_commit(session, storage, key, grace)


def cancel_job(*, session: Session, tenant_id: str, job_id: str) -> Job:
    """Cancel a queued job at once; flag a running one (its worker stops it within seconds).

    Raises:
        Conflict: the job already finished.
    """
    job = get_job_or_raise(session, tenant_id, job_id)
    now = utcnow()
    if repository.transition(
        session,
        job.id,
        {JobStatus.queued},
        {"status": JobStatus.cancelled, "cancel_requested": True, "finished_at": now},
    ):
        events.record_log(session, job.id, "cancelled while queued")
        events.record_status(session, job.id, JobStatus.cancelled)
        webhooks.enqueue_terminal(session, job.id)
        job_metrics.record_terminal(session, job.id)
    elif repository.transition(session, job.id, {JobStatus.running}, {"cancel_requested": True}):
        if not job.cancel_requested:  # a repeated cancel says nothing new
            events.record_log(session, job.id, "cancel requested; the worker stops the job")
    else:
        raise Conflict(f"Job {job.id} already finished.", code="already_terminal")
    session.flush()
    session.refresh(job)
    return job


def check_events_readable(session: Session, tenant_id: str, job_id: str) -> None:
    """Before a stream starts: the tenant's job exists and has not expired.

    Raises:
        NotFound: no such job for this tenant.
        Gone: retention expired the job.
    """
    get_job_or_raise(session, tenant_id, job_id)


def poll_events(
    tenant_id: str, job_id: str, after_seq: int, limit: int = 500
) -> tuple[list[tuple[int, str, dict[str, Any]]], bool]:
    """One poll of a job's stream, in a short read transaction of its own (a stream holds no
    session while it waits): the events after `after_seq` as (seq, event, data), and whether
    the stream is over (the job is gone, or it is finished and nothing is left to send)."""
    with read_sessionmaker()() as session:
        # The job first: a terminal status commits with its event, so a job read as finished
        # has its last event visible to the query that follows.
        job = repository.get(session, tenant_id, job_id)
        if job is None or job.expired_at is not None:
            return [], True
        finished = job.status in TERMINAL
        rows = [
            (e.seq, e.event, dict(e.data or {}))
            for e in events.after(session, job_id, after_seq, limit)
        ]
    over = finished and len(rows) < limit
    return rows, over


def job_logs(session: Session, tenant_id: str, job_id: str) -> str:
    """The job's log text (worker and job lines, UTC timestamps), at most its last 1 MB.

    Raises:
        NotFound: no such job for this tenant.
        Gone: retention expired the job.
    """
    job = get_job_or_raise(session, tenant_id, job_id)
    return events.log_tail(session, job.id)


def read_job(session: Session, tenant_id: str, job: Job) -> JobRead:
    """The public view of one job, with its artifacts."""
    return to_read(job, artifacts.list_by_job(session, tenant_id, [job.id])[job.id])


def get_job(session: Session, tenant_id: str, job_id: str) -> JobRead:
    """The public view of the tenant's job `job_id`.

    Raises:
        NotFound: no such job for this tenant.
    """
    return read_job(session, tenant_id, get_job_or_raise(session, tenant_id, job_id))


def list_jobs(
    session: Session, tenant_id: str, status: JobStatus | None, limit: int, cursor: str | None
) -> Page[JobRead]:
    """One page of the tenant's jobs, newest first, optionally of one status."""
    rows, next_cursor = page_of(
        repository.list_page(session, tenant_id, status, limit, cursor), limit
    )
    arts = artifacts.list_by_job(session, tenant_id, [j.id for j in rows])
    return Page[JobRead](items=[to_read(j, arts[j.id]) for j in rows], next_cursor=next_cursor)


def count_jobs_by_status(session: Session) -> dict[str, int]:
    """Jobs per status over every tenant, every status present (0 when none)."""
    return {**dict.fromkeys(JobStatus, 0), **repository.count_by_status(session)}


def to_read(job: Job, arts: list[Artifact]) -> JobRead:
    """The public view of a job and the given artifacts of it."""
    return JobRead(
        id=job.id,
        model_id=job.model_id,
        status=job.status,
        cancel_requested=job.cancel_requested,
        progress=job.progress or {},
        error=job.error,
        attempt=job.attempt,
        spec=job.spec,
        artifacts=[ArtifactRead.model_validate(a) for a in arts],
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
    )
