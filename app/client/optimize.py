"""`Client.optimize`: the whole pipeline step (upload, submit, follow, download) in one call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.client.models import Job, JobEvent, OptimizeResult
from app.client.streams import ProgressCallback

if TYPE_CHECKING:
    from app.client.api import Client

# `on_transfer(file name, done bytes, total bytes or None)` for uploads and downloads.
TransferCallback = Callable[[str, int, int | None], None]
DOWNLOADED_KINDS = ("model", "report")


def _named(callback: TransferCallback | None, name: str) -> ProgressCallback | None:
    if callback is None:
        return None
    return lambda done, total: callback(name, done, total)


def optimize(
    client: Client,
    model_path: Path,
    *,
    steps: list[dict[str, Any]] | None = None,
    recipe: str | None = None,
    constraints: dict[str, Any] | None = None,
    wait: bool = True,
    out: Path | str | None = None,
    input_shapes: Any = None,
    calibration_data: Path | str | None = None,
    eval_data: Path | str | None = None,
    metric: str = "accuracy",
    spec: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    on_upload: TransferCallback | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    on_download: TransferCallback | None = None,
) -> OptimizeResult:
    """Upload `model_path`, wait for its inspection, upload the datasets, submit `steps` or
    `recipe="auto"` with `constraints` (and any other job-spec fields in `spec`: `benchmark`,
    `objective`, `time_budget_s`, `device`...), and with `wait` follow the job to its end; a
    succeeded job's model and reports are downloaded into `out` when given. A rejected model
    returns a result without a job (`exit_code` 1)."""
    if (steps is None) == (recipe is None):
        raise ValueError("give exactly one of `steps` and `recipe`")
    model = client.upload_model(
        model_path, input_shapes=input_shapes, on_progress=_named(on_upload, model_path.name)
    )
    model = client.wait_model(model.id)
    if model.status != "ready":
        return OptimizeResult(model=model)
    body: dict[str, Any] = {**(spec or {}), "model_id": model.id}
    body.update({"recipe": recipe} if recipe else {"steps": steps})
    if constraints:
        body["constraints"] = constraints
    if calibration_data:
        body["calibration_dataset_id"] = _dataset(client, calibration_data, on_upload)
    if eval_data:
        dataset_id = _dataset(client, eval_data, on_upload)
        body["evaluation"] = {"dataset_id": dataset_id, "metric": metric}
    job = client.submit(body, idempotency_key)
    if on_event:
        on_event(JobEvent(event="status", data={"status": job.status, "id": job.id}))
    if not wait:
        return OptimizeResult(model=model, job=job)
    job = client.wait_job(job.id, on_event=on_event)
    if job.status != "succeeded":
        return OptimizeResult(model=model, job=job)
    files = [] if out is None else _download(client, job, Path(out), on_download)
    return OptimizeResult(model=model, job=job, report=client.get_report(job.id), files=files)


def _dataset(client: Client, file: Path | str, on_upload: TransferCallback | None) -> str:
    path = Path(file)
    return client.upload_dataset(path, on_progress=_named(on_upload, path.name)).id


def _download(
    client: Client, job: Job, out: Path, on_download: TransferCallback | None
) -> list[Path]:
    """The job's model and reports into `out`."""
    return [
        client.download_artifact(job.id, art.name, out / art.name, _named(on_download, art.name))
        for art in job.artifacts
        if art.kind in DOWNLOADED_KINDS
    ]
