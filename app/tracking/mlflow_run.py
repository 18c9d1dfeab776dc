"""The one module that talks to MLflow (`MlflowClient`, imported on first use only).

One client per tracking URI, no global MLflow state (`mlflow.set_tracking_uri` is never called).
MLflow's own HTTP retries (7 by default, minutes with its backoff) are turned off unless the
operator set `MLFLOW_HTTP_REQUEST_MAX_RETRIES`: the outbox retries, with its own backoff, and a
tracking server that is down must not hold the housekeeping tick. Telemetry is off unless
`MLFLOW_DISABLE_TELEMETRY` says otherwise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.tracking.record import COMPLETE_TAG, JOB_ID_TAG

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

MISSING = "the worker has no MLflow client: pip install 'modelpress[mlflow]'"
BATCH = 100  # MLflow's MAX_PARAMS_TAGS_PER_BATCH (metrics allow 1000)


class MlflowUnavailable(RuntimeError):
    """mlflow is not installed in this process."""


def _client(tracking_uri: str, timeout: float) -> MlflowClient:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout))))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowUnavailable(MISSING) from exc
    return MlflowClient(tracking_uri=tracking_uri)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Tracker:
    """Logs one job as one run; every step is safe to repeat (the outbox retries)."""

    def __init__(self, tracking_uri: str, timeout: float) -> None:
        self.client = _client(tracking_uri, timeout)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use (a concurrent creation is fine)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except MlflowException:
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def open_run(
        self, experiment_id: str, job_id: str, run_name: str, tags: dict[str, str], start_ms: int
    ) -> tuple[str, bool]:
        """The job's run: the one tagged with its id if an earlier attempt made it, else a new
        one. Returns (run id, complete: an earlier attempt logged everything)."""
        query = f"tags.`{JOB_ID_TAG}` = '{job_id}'"
        runs = self.client.search_runs([experiment_id], filter_string=query, max_results=10)
        if runs:
            run = min(runs, key=lambda r: r.info.start_time or 0)  # the first, should two exist
            return run.info.run_id, run.data.tags.get(COMPLETE_TAG) == "true"
        created = self.client.create_run(
            experiment_id, start_time=start_ms, tags=tags, run_name=run_name
        )
        return created.info.run_id, False

    def log(
        self,
        run_id: str,
        params: dict[str, str],
        metrics: dict[str, float],
        tags: dict[str, str],
        timestamp_ms: int,
    ) -> None:
        """Params, metrics (step 0 at the job's finish time, so a repeat is a no-op) and tags."""
        from mlflow.entities import Metric, Param, RunTag

        for chunk in _chunks([Param(k, v) for k, v in sorted(params.items())], BATCH):
            self.client.log_batch(run_id, params=chunk)
        values = [Metric(k, v, timestamp_ms, 0) for k, v in sorted(metrics.items())]
        for chunk in _chunks(values, BATCH):
            self.client.log_batch(run_id, metrics=chunk)
        for chunk in _chunks([RunTag(k, v) for k, v in sorted(tags.items())], BATCH):
            self.client.log_batch(run_id, tags=chunk)

    def upload(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str, end_ms: int) -> None:
        """Mark the run complete (the tag) and terminated with the job's outcome."""
        self.client.set_tag(run_id, COMPLETE_TAG, "true")
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
