"""Running jobs and inspections from the database: claim, sandbox, publish, finish.

Used alike by the Celery task (Redis mode) and the embedded worker (database polling).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.blobs.service import release_after_commit
from app.core.config import Settings
from app.core.errors import ArtifactCorrupt, JobFailure
from app.core.formats import model_filename
from app.core.storage import Storage, get_storage, sha256_file
from app.datasets import repository as datasets
from app.db.base import utcnow
from app.db.orm import Job, JobStatus, ModelStatus
from app.db.session import session_scope
from app.jobs import repository as jobs
from app.jobs.schemas import dataset_refs
from app.ml_models import repository as models
from worker.sandbox.protocol import ModelFile, SandboxRequest
from worker.sandbox.supervisor import Outcome, failure_of, run_sandboxed

log = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
HEARTBEAT_SECONDS = 2.0


class Heartbeat:
    """Called by the supervisor every tick: relays progress, extends the lease, reads cancel."""

    def __init__(
        self, job_id: str, attempt: int, settings: Settings, stop: Callable[[], bool]
    ) -> None:
        self.job_id, self.attempt, self.settings, self.stop = job_id, attempt, settings, stop
        self.last = 0.0
        self.latest: dict[str, Any] | None = None
        self.interrupted = False

    def __call__(self, events: list[dict[str, Any]]) -> bool:
        if events:
            self.latest = events[-1]
        if self.stop():
            self.interrupted = True
            return True
        if time.monotonic() - self.last < HEARTBEAT_SECONDS:
            return False
        self.last = time.monotonic()
        values: dict[str, Any] = {
            "lease_expires_at": utcnow() + timedelta(seconds=self.settings.job_lease_seconds)
        }
        if self.latest:
            values["progress"] = {k: v for k, v in self.latest.items() if k != "ts"}
        with session_scope() as session:
            alive = jobs.transition(
                session, self.job_id, {JobStatus.running}, values, attempt=self.attempt
            )
            job = session.get(Job, self.job_id)
            return not alive or bool(job and job.cancel_requested)


def _stage_blob(storage: Storage, key: str, dest: Path) -> None:
    try:
        storage.copy_verified(key, dest)
    except ArtifactCorrupt as exc:
        raise JobFailure("artifact_corrupt", f"An input of this job: {exc}") from exc


def _stage_inputs(job: Job, scratch: Path, storage: Storage, session: Any) -> SandboxRequest:
    model = models.get_any(session, job.model_id)
    if model is None:
        raise JobFailure("model_missing", "The job's model was deleted.")
    (scratch / "input").mkdir()
    rel = f"input/{model_filename('model', model.format)}"
    _stage_blob(storage, model.storage_key, scratch / rel)
    public = {"id": model.id, "name": model.name, "format": model.format, "sha256": model.sha256}
    request = SandboxRequest(
        kind="run",
        job_id=job.id,
        device=(job.spec or {}).get("device", "cpu"),
        spec=job.spec,
        model=ModelFile(
            path=rel,
            format=model.format,
            input_shapes=model.input_shapes,
            inputs=model.inputs or [],
            outputs=model.outputs or [],
            public=public,
        ),
    )
    (scratch / "data").mkdir()
    for pointer, dataset_id in dataset_refs(job.spec or {}):
        ds = datasets.get(session, job.tenant_id, dataset_id)
        if ds is None:
            raise JobFailure("dataset_missing", f"The dataset at {pointer} was deleted.")
        if ds.id not in request.datasets:
            _stage_blob(storage, ds.storage_key, scratch / f"data/{ds.id}.npz")
            request.datasets[ds.id] = f"data/{ds.id}.npz"
            request.datasets_sha256[ds.id] = ds.sha256
    return request


def _publish(job: Job, attempt: int, outcome: Outcome, scratch: Path, storage: Storage) -> None:
    out = (scratch / "out").resolve()
    rows = []
    for art in outcome.result.artifacts if outcome.result else []:
        path = (out / art.name).resolve()
        if path.parent != out or path.is_symlink() or not path.is_file():
            raise JobFailure("job_error", f"The job produced an invalid artifact {art.name!r}.")
        size, digest = path.stat().st_size, sha256_file(path)
        rows.append(
            {
                "job_id": job.id,
                "tenant_id": job.tenant_id,
                "name": path.name,
                "kind": art.kind,
                "media_type": art.media_type,
                "size_bytes": size,
                "sha256": digest,
                "storage_key": storage.put(path, digest),
            }
        )
    with session_scope() as session:
        done = jobs.transition(
            session,
            job.id,
            {JobStatus.running},
            {
                "status": JobStatus.succeeded,
                "finished_at": utcnow(),
                "lease_expires_at": None,
                "progress": {"fraction": 1.0, "message": "succeeded"},
            },
            attempt=attempt,
        )
        if not done:
            session.rollback()  # another attempt owns the job now; leave its result alone
            return
        for row in rows:
            jobs.upsert_artifact(session, row)


def _fail(job_id: str, attempt: int, status: str, error: dict[str, Any] | None) -> None:
    with session_scope() as session:
        jobs.transition(
            session,
            job_id,
            {JobStatus.running},
            {"status": status, "error": error, "finished_at": utcnow(), "lease_expires_at": None},
            attempt=attempt,
        )


def _requeue(job_id: str, attempt: int) -> None:
    with session_scope() as session:
        jobs.transition(
            session,
            job_id,
            {JobStatus.running},
            {"status": JobStatus.queued, "lease_expires_at": None, "dispatched_at": utcnow()},
            attempt=attempt,
        )


def execute_job(
    job_id: str, settings: Settings, stop: Callable[[], bool] = lambda: False
) -> str | None:
    """Claim and run one job to a terminal state; returns that state (None: nothing to claim)."""
    storage = get_storage(settings)
    with session_scope() as session:
        attempt = jobs.claim(session, job_id, WORKER_NAME, settings.job_lease_seconds)
    if attempt is None:
        return None
    scratch = storage.new_scratch(f"job-{job_id}-a{attempt}")
    try:
        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job is not None
            request = _stage_inputs(job, scratch, storage, session)
        request.threads = settings.sandbox_threads or os.cpu_count() or 1
        beat = Heartbeat(job_id, attempt, settings, stop)
        outcome = run_sandboxed(scratch, request, settings, settings.sandbox_wall_seconds, beat)
        if beat.interrupted:
            _requeue(job_id, attempt)
            return JobStatus.queued
        if outcome.cancelled:
            _fail(job_id, attempt, JobStatus.cancelled, None)
            return JobStatus.cancelled
        failure = failure_of(outcome, scratch, settings.sandbox_wall_seconds)
        if failure is not None:
            log.warning(
                "job failed",
                extra={
                    "job_id": job_id,
                    "code": failure.code,
                    "stderr": outcome.stderr_tail[-1500:],
                },
            )
            raise failure
        _publish(job, attempt, outcome, scratch, storage)
        return JobStatus.succeeded
    except JobFailure as exc:
        _fail(job_id, attempt, JobStatus.failed, exc.to_problem())
        return JobStatus.failed
    finally:
        storage.remove_tree(scratch)


def execute_inspection(model_id: str, settings: Settings) -> str | None:
    """Inspect an uploaded model in the sandbox; `ready` with its signature, or `rejected`."""
    storage = get_storage(settings)
    with session_scope() as session:
        model = models.get_any(session, model_id)
        if model is None or model.status != ModelStatus.validating:
            return None
        fmt, key, shapes = model.format, model.storage_key, model.input_shapes
    scratch = storage.new_scratch(f"inspect-{model_id}")
    try:
        rel = model_filename("model", fmt)
        failure: JobFailure | None
        outcome: Outcome | None
        try:
            _stage_blob(storage, key, scratch / rel)
        except JobFailure as exc:
            failure, outcome = exc, None
        else:
            request = SandboxRequest(
                kind="inspect", model=ModelFile(path=rel, format=fmt, input_shapes=shapes)
            )
            outcome = run_sandboxed(scratch, request, settings, settings.inspect_wall_seconds)
            failure = failure_of(outcome, scratch, settings.inspect_wall_seconds)
        if failure is not None:
            values: dict[str, Any] = {"status": ModelStatus.rejected, "error": failure.to_problem()}
        else:
            info = (outcome.result.model if outcome and outcome.result else None) or {}
            values = {
                "status": ModelStatus.ready,
                **{k: info.get(k) for k in ("inputs", "outputs", "parameter_count", "opset")},
            }
        with session_scope() as session:
            if models.finish_inspection(session, model_id, values) and failure is not None:
                # A rejected model keeps its row and error, not its bytes.
                release_after_commit(session, storage, key, settings.blob_grace_seconds)
        return str(values["status"])
    finally:
        storage.remove_tree(scratch)
