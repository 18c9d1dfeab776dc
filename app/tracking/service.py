"""MLflow runs of finished jobs, through the webhook outbox.

- `payload_of` (every terminal transition, in its transaction, when
  `MODELPRESS_MLFLOW_TRACKING_URI` is set): the snapshot the outbox row carries: the job, its
  verdict and its artifacts' storage keys, so that sending needs nothing else from the database.
- `send` (the housekeeping tick, for a row whose event is `mlflow.run`): one attempt at logging
  the run; returns None when the run is complete, else the error (the outbox retries it).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import ArtifactCorrupt
from app.core.storage import get_storage
from app.tracking import record, repository
from app.tracking.mlflow_run import MlflowUnavailable, Tracker

log = logging.getLogger(__name__)
EVENT = "mlflow.run"
RUN_NAME_PREFIX = "modelpress-"
LOGGED_KINDS = frozenset({"model", "report", "manifest"})  # not the `auto` candidates
_JOB_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _ms(text: str | None) -> int | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def payload_of(
    session: Session, job_id: str, verdict: dict[str, Any] | None, settings: Settings
) -> dict[str, Any] | None:
    """The outbox payload of the job's run (None: the job is gone)."""
    job = repository.job_view(session, job_id)
    if job is None:
        return None
    error = job["error"] or {}
    return {
        "experiment": settings.mlflow_experiment,
        "job": {
            "id": job["id"],
            "tenant_id": job["tenant_id"],
            "model_id": job["model_id"],
            "status": str(job["status"]),
            "spec": job["spec"],
            "error_code": error.get("code"),
            "created_at": _iso(job["created_at"]),
            "started_at": _iso(job["started_at"]),
            "finished_at": _iso(job["finished_at"]),
        },
        "verdict": {"met": verdict.get("met"), "reasons": list(verdict.get("reasons") or [])[:50]}
        if verdict
        else None,
        "artifacts": [
            a for a in repository.artifacts(session, job_id) if a["kind"] in LOGGED_KINDS
        ],
    }


def lease_seconds(settings: Settings) -> float:
    """How long one attempt may own its row: a few requests plus the artifacts' uploads."""
    return 20 * settings.mlflow_timeout_seconds + 60


def send(
    delivery_id: str, tracking_uri: str, payload: dict[str, Any], settings: Settings
) -> str | None:
    """Log the job as one MLflow run; None when done, else why not (never raises)."""
    try:
        _log_run(delivery_id, tracking_uri, payload, settings)
    except MlflowUnavailable as exc:
        return str(exc)
    except Exception as exc:  # any failure of one attempt is its error: the outbox retries
        error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("mlflow run not logged yet", extra={"delivery_id": delivery_id, "error": error})
        return error
    return None


def _log_run(
    delivery_id: str, tracking_uri: str, payload: dict[str, Any], settings: Settings
) -> None:
    job = payload["job"]
    if not _JOB_ID.match(str(job["id"])):
        raise ValueError("not a job id")
    tracker = Tracker(tracking_uri, settings.mlflow_timeout_seconds)
    experiment = tracker.experiment_id(payload["experiment"])
    finished = _ms(job["finished_at"]) or 0
    start = _ms(job["started_at"]) or _ms(job["created_at"]) or finished
    first_tags = {
        **record.tags(job, payload.get("verdict")),
        record.TAG_PREFIX + "delivery_id": delivery_id,
    }
    run_id, complete = tracker.open_run(
        experiment, job["id"], RUN_NAME_PREFIX + job["id"], first_tags, start
    )
    if complete:
        return
    with tempfile.TemporaryDirectory(prefix="modelpress-mlflow-") as tmp:
        files, missing = _fetch(payload["artifacts"], Path(tmp), settings)
        report = _report(files.get("report.json"))
        verdict = report.get("verdict") if report else payload.get("verdict")
        tags = record.tags(job, verdict)
        if missing:
            tags[record.TAG_PREFIX + "artifacts_missing"] = ", ".join(missing)
        tracker.log(
            run_id, record.params(job.get("spec") or {}), record.metrics(report), tags, finished
        )
        for path in files.values():
            tracker.upload(run_id, path)
    tracker.finish(run_id, record.RUN_STATUS.get(job["status"], "FINISHED"), finished)


def _fetch(
    artifacts: list[dict[str, Any]], into: Path, settings: Settings
) -> tuple[dict[str, Path], list[str]]:
    """Copy the artifacts out of storage, verified; returns (name -> file, names missing)."""
    storage = get_storage(settings)
    files: dict[str, Path] = {}
    missing: list[str] = []
    for artifact in artifacts:
        name = Path(str(artifact["name"])).name
        dest = into / name
        try:
            storage.copy_verified(artifact["storage_key"], dest)
        except ArtifactCorrupt:
            missing.append(name)  # deleted or corrupt since the job finished: logged without
            continue
        files[name] = dest
    return files, missing


def _report(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
