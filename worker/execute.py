"""Running jobs and inspections from the database: claim, sandbox, publish, finish.

Used alike by the Celery task (Redis mode) and the embedded worker (database polling).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.blobs.service import release_after_commit
from app.core.config import Settings
from app.core.errors import ArtifactCorrupt, JobFailure
from app.core.formats import model_filename
from app.core.storage import Storage, get_storage, sha256_file
from app.datasets import repository as datasets
from app.db.base import seconds_between, utcnow
from app.db.orm import Job, JobStatus, ModelStatus
from app.db.session import session_scope
from app.jobs import events as job_events
from app.jobs import repository as jobs
from app.jobs.schemas import dataset_refs
from app.metrics import service as job_metrics
from app.ml_models import repository as models
from app.webhooks import service as webhooks
from worker.sandbox.progress import Relay
from worker.sandbox.protocol import ModelFile, SandboxRequest
from worker.sandbox.supervisor import Outcome, failure_of, run_sandboxed

log = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
HEARTBEAT_SECONDS = 2.0
EVENTS_SECONDS = 1.0  # the child's events reach the database at most this often


class Heartbeat:
    """Called by the supervisor every tick: relays the child's progress, steps and log lines as
    job events, extends the lease, reads cancel.

    It writes at most once a second while there are events to send (`EVENTS_SECONDS`), else
    every `HEARTBEAT_SECONDS` for the lease: one short transaction either way (SQLite shares
    its one writer with the API)."""

    def __init__(
        self, job_id: str, attempt: int, settings: Settings, stop: Callable[[], bool]
    ) -> None:
        self.job_id, self.attempt, self.settings, self.stop = job_id, attempt, settings, stop
        self.next_at, self.events_at, self.failures = 0.0, 0.0, 0
        self.relay = Relay()
        self.received = 0  # child records seen; the rest of `Outcome.progress` is `finish`'s
        self.interrupted = False

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.relay.latest_progress

    def log(self, message: str, level: str = "info") -> None:
        """A worker line about the job, sent with the next write."""
        self.relay.worker_log(message, level)

    def finish(self, outcome: Outcome) -> list[tuple[str, dict[str, Any]]]:
        """The events still to write once the child is done (its last records included), for
        the final transition's transaction."""
        self.relay.add(outcome.progress[self.received :])
        self.received = len(outcome.progress)
        return self.relay.pending()

    def __call__(self, records: list[dict[str, Any]]) -> bool:
        self.received += len(records)
        self.relay.add(records)
        if self.stop():
            self.interrupted = True
            return True
        now = time.monotonic()
        pending = self.relay.pending() if now >= self.events_at else []
        if now < self.next_at and not pending:
            return False
        values: dict[str, Any] = {
            "lease_expires_at": utcnow() + timedelta(seconds=self.settings.job_lease_seconds)
        }
        if self.latest:
            values["progress"] = self.latest
        try:
            with session_scope() as session:
                alive = jobs.transition(
                    session, self.job_id, {JobStatus.running}, values, attempt=self.attempt
                )
                if alive:
                    job_events.record_many(session, self.job_id, pending)
                job = session.get(Job, self.job_id)
                stop = not alive or bool(job and job.cancel_requested)
        except SQLAlchemyError:
            # A database blip must not abort the job: the child goes on, the lease is renewed
            # when the database answers again (with backoff). If the outage outlasts the
            # lease, the reaper requeues the job and this attempt's result is refused by the
            # compare-and-set at publish. Unsent events wait for the next write.
            self.failures += 1
            backoff = min(HEARTBEAT_SECONDS * 2**self.failures, self.settings.job_lease_seconds / 3)
            self.next_at = self.events_at = time.monotonic() + backoff
            log.warning(
                "heartbeat failed; the job goes on",
                extra={"job_id": self.job_id, "failures": self.failures, "retry_in_s": backoff},
            )
            return False
        self.relay.sent(len(pending))
        self.failures = 0
        self.next_at = time.monotonic() + HEARTBEAT_SECONDS
        if pending:
            self.events_at = time.monotonic() + EVENTS_SECONDS
        return stop


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


def _queue_wait(job: Job) -> float:
    """Seconds from submission to this attempt's claim (a requeued job counts its first wait
    and the attempts before this one too: that is what its submitter waited)."""
    return round(max(seconds_between(job.created_at, job.started_at or utcnow()) or 0.0, 0.0), 4)


def _store_artifacts(
    job: Job, outcome: Outcome, scratch: Path, storage: Storage
) -> list[dict[str, Any]]:
    """Store each artifact the child names (re-hashed here); returns their rows, not committed."""
    out = (scratch / "out").resolve()
    rows = []
    for art in outcome.result.artifacts if outcome.result else []:
        named = out / art.name
        path = named.resolve()
        if named.is_symlink() or path.parent != out or not path.is_file():
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
    return rows


Events = Sequence[tuple[str, dict[str, Any]]]


def _commit_success(
    job: Job, attempt: int, outcome: Outcome, rows: list[dict[str, Any]], pending: Events = ()
) -> None:
    """Succeed the attempt and record its artifacts, in one transaction, if it still owns the job
    (a lost compare-and-set leaves stored blobs to the collector); its last events, the verdict
    and the `succeeded` status go in the same transaction."""
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
        verdict = outcome.result.verdict if outcome.result else None
        done_events: list[tuple[str, dict[str, Any]]] = [
            *pending,
            ("log", job_events.log_data(f"published {len(rows)} artifacts")),
            *([("verdict", verdict)] if verdict is not None else []),
            ("status", job_events.status_data(job.id, JobStatus.succeeded, attempt=attempt)),
        ]
        job_events.record_many(session, job.id, done_events)
        webhooks.enqueue_terminal(
            session, job.id, outcome.result.verdict if outcome.result else None
        )
        job_metrics.record_terminal(session, job.id, job_metrics.step_timings(outcome.progress))


def _fail(
    job_id: str,
    attempt: int,
    status: str,
    error: dict[str, Any] | None,
    pending: Events = (),
) -> None:
    with session_scope() as session:
        if jobs.transition(
            session,
            job_id,
            {JobStatus.running},
            {"status": status, "error": error, "finished_at": utcnow(), "lease_expires_at": None},
            attempt=attempt,
        ):
            why = f"{error.get('code')}: {error.get('detail')}" if error else "cancel requested"
            line = job_events.log_data(f"{status}: {why}", level="error" if error else "info")
            final = job_events.status_data(job_id, status, attempt=attempt, error=error)
            job_events.record_many(session, job_id, [*pending, ("log", line), ("status", final)])
            webhooks.enqueue_terminal(session, job_id)
            job_metrics.record_terminal(session, job_id)


def _requeue(job_id: str, attempt: int, pending: Events = ()) -> None:
    with session_scope() as session:
        if jobs.transition(
            session,
            job_id,
            {JobStatus.running},
            {"status": JobStatus.queued, "lease_expires_at": None, "dispatched_at": utcnow()},
            attempt=attempt,
        ):
            line = job_events.log_data("the worker is stopping; the job goes back to the queue")
            again = job_events.status_data(job_id, JobStatus.queued, attempt=attempt)
            job_events.record_many(session, job_id, [*pending, ("log", line), ("status", again)])


def execute_job(
    job_id: str, settings: Settings, stop: Callable[[], bool] = lambda: False
) -> str | None:
    """Claim and run one job to a terminal state; returns that state (None: nothing to claim)."""
    storage = get_storage(settings)
    with session_scope() as session:
        attempt = jobs.claim(session, job_id, WORKER_NAME, settings.job_lease_seconds)
        if attempt is not None:
            claimed = [
                ("status", job_events.status_data(job_id, JobStatus.running, attempt=attempt)),
                ("log", job_events.log_data(f"claimed by {WORKER_NAME} (attempt {attempt})")),
            ]
            job_events.record_many(session, job_id, claimed)
            if attempt == 1:
                job_metrics.record_queue_wait(session, job_id)
    if attempt is None:
        return None
    scratch = storage.new_scratch(f"job-{job_id}-a{attempt}")
    beat: Heartbeat | None = None
    try:
        staging = time.monotonic()
        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job is not None
            request = _stage_inputs(job, scratch, storage, session)
        request.timings = {
            "queue_wait_s": _queue_wait(job),
            "stage_s": round(time.monotonic() - staging, 4),
        }
        request.threads = settings.sandbox_threads or os.cpu_count() or 1
        beat = Heartbeat(job_id, attempt, settings, stop)
        beat.log(f"inputs staged ({len(request.datasets)} datasets); starting the sandbox")
        outcome = run_sandboxed(scratch, request, settings, settings.sandbox_wall_seconds, beat)
        beat.finish(outcome)
        if beat.interrupted:
            _retrying(lambda: _requeue(job_id, attempt, _pending(beat)), settings)
            return JobStatus.queued
        if outcome.cancelled:
            cancel = lambda: _fail(job_id, attempt, JobStatus.cancelled, None, _pending(beat))  # noqa: E731
            _retrying(cancel, settings)
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
        rows = _store_artifacts(job, outcome, scratch, storage)
        done = lambda: _commit_success(job, attempt, outcome, rows, _pending(beat))  # noqa: E731
        _retrying(done, settings)
        return JobStatus.succeeded
    except JobFailure as exc:
        problem = exc.to_problem()
        _retrying(
            lambda: _fail(job_id, attempt, JobStatus.failed, problem, _pending(beat)), settings
        )
        return JobStatus.failed
    except (SQLAlchemyError, OSError) as exc:
        # Whatever else goes wrong in this attempt ends it with a reason, never `running`: a
        # full disk fails the job; a database that stays away leaves it to its lease, and the
        # reaper requeues it.
        log.exception("job attempt failed", extra={"job_id": job_id})
        if isinstance(exc, SQLAlchemyError):
            raise
        problem = _os_failure(exc).to_problem()
        _retrying(
            lambda: _fail(job_id, attempt, JobStatus.failed, problem, _pending(beat)), settings
        )
        return JobStatus.failed
    finally:
        storage.remove_tree(scratch)


def _pending(beat: Heartbeat | None) -> Events:
    """The attempt's events not written yet (none before the sandbox started)."""
    return beat.relay.pending() if beat is not None else ()


def _os_failure(exc: OSError) -> JobFailure:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return JobFailure("insufficient_storage", "The worker's disk is full; retry later.")
    return JobFailure("job_error", f"The worker could not run the job: {exc.strerror or exc}.")


def _retrying(action: Callable[[], object], settings: Settings) -> None:
    """Run a final transition, retrying a database that is briefly away (backoff up to the
    lease); past that the error propagates and the lease decides (the reaper requeues)."""
    deadline, delay = time.monotonic() + settings.job_lease_seconds, 0.5
    while True:
        try:
            action()
            return
        except SQLAlchemyError:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable; retrying", extra={"retry_in_s": delay})
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _give_up_inspection(
    model_id: str, key: str, attempts: int, settings: Settings, storage: Storage
) -> str:
    """Reject a model whose inspections never finished (each killed its worker, or the worker
    died under it): it cannot hold the queue any longer."""
    failure = JobFailure(
        "inspection_failed",
        f"The model's inspection did not complete in {attempts} attempts (its worker stopped "
        "each time); it is rejected so that it cannot block other work.",
    )
    with session_scope() as session:
        values: dict[str, object] = {"status": ModelStatus.rejected, "error": failure.to_problem()}
        if models.finish_inspection(session, model_id, values):
            release_after_commit(session, storage, key, settings.blob_grace_seconds)
    log.warning("inspection given up", extra={"model_id": model_id, "attempts": attempts})
    return ModelStatus.rejected


def execute_inspection(model_id: str, settings: Settings) -> str | None:
    """Inspect an uploaded model in the sandbox; `ready` with its signature, or `rejected`."""
    storage = get_storage(settings)
    with session_scope() as session:
        model = models.get_any(session, model_id)
        if model is None or model.status != ModelStatus.validating:
            return None
        fmt, key, shapes = model.format, model.storage_key, model.input_shapes
        attempts = models.start_inspection(session, model_id)
    if attempts is None:
        return None
    if attempts > settings.inspect_max_attempts:
        return _give_up_inspection(model_id, key, attempts - 1, settings, storage)
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
