"""The typed client against the real app: streamed uploads the server parses, typed results of
its real answers, downloads, the report, and `optimize` from upload to files on disk."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.client import Client, Dataset, Job, JobEvent, Model, Page, Report


def test_a_streamed_upload_is_the_model_the_server_stored(api: Client, mlp_onnx: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    size = mlp_onnx.stat().st_size

    model = api.upload_model(mlp_onnx, name="mlp", on_progress=lambda *p: seen.append(p))

    assert isinstance(model, Model)
    assert (model.name, model.format, model.status) == ("mlp", "onnx", "validating")
    assert model.size_bytes == size
    assert model.sha256 == hashlib.sha256(mlp_onnx.read_bytes()).hexdigest()
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert api.get_model(model.id).created_at is not None


def test_input_shapes_travel_as_the_json_form_field(api: Client, mlp_onnx: Path) -> None:
    model = api.upload_model(mlp_onnx, input_shapes=[[1, 32]])

    assert api.get_model(model.id).input_shapes == [[1, 32]]


def test_a_dataset_upload_reads_back_typed(api: Client, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((5, 32), np.float32), labels=np.arange(5))
    (tmp_path / "d.npz").write_bytes(buffer.getvalue())

    dataset = api.upload_dataset(tmp_path / "d.npz")

    assert isinstance(dataset, Dataset)
    assert dataset.num_samples == 5
    assert {a.name: a.shape for a in dataset.arrays} == {"x": [5, 32], "labels": [5]}
    page = api.list_datasets()
    assert isinstance(page, Page) and [d.id for d in page.items] == [dataset.id]


def test_jobs_and_their_pages_are_typed(api: Client, job: dict[str, Any]) -> None:
    got = api.get_job(job["id"])
    page = api.list_jobs(status="queued", limit=1)

    assert isinstance(got, Job)
    assert got.status == "queued" and got.progress.message == "queued"
    assert got.spec["steps"][0]["op"] == "quantize"
    assert [j.id for j in page.items] == [job["id"]]
    assert api.list_jobs(status="failed").items == []


def test_cancel_returns_the_job_with_its_flag(api: Client, job: dict[str, Any]) -> None:
    cancelled = api.cancel(job["id"])

    assert cancelled.id == job["id"]
    assert cancelled.cancel_requested or cancelled.status == "cancelled"


def test_artifacts_download_and_the_report_reads_typed(
    api: Client, job: dict[str, Any], finish_job: Callable, tmp_path: Path
) -> None:
    finish_job(job["id"], met=False)
    seen: list[tuple[int, int | None]] = []

    artifacts = api.list_artifacts(job["id"])
    path = api.download_artifact(
        job["id"], "model.onnx", tmp_path / "m.onnx", on_progress=lambda *p: seen.append(p)
    )
    report = api.get_report(job["id"])

    assert {a.name: a.kind for a in artifacts}["model.onnx"] == "model"
    assert path.read_bytes() == b"optimized onnx"
    assert seen[-1] == (14, 14)
    assert isinstance(report, Report)
    assert report.verdict.met is False and report.verdict.reasons == ["too slow"]
    assert report.optimized.size_bytes == 40
    assert report.baseline.latency_ms["1"]["p50"] == 0.5


def test_optimize_uploads_follows_and_downloads(
    api: Client, fake_worker: Callable, mlp_onnx: Path, tmp_path: Path
) -> None:
    api.sleep = fake_worker(met=True)
    uploads: list[str] = []
    events: list[JobEvent] = []

    result = api.optimize(
        mlp_onnx,
        steps=[{"op": "quantize"}],
        constraints={"min_cosine": 0.99},
        out=tmp_path / "dist",
        spec={"benchmark": {"batch_sizes": [1], "iterations": 5}},
        on_upload=lambda name, done, total: uploads.append(name),
        on_event=events.append,
    )

    assert result.exit_code == 0
    assert result.job is not None and result.job.status == "succeeded"
    assert result.job.spec["constraints"]["min_cosine"] == 0.99
    assert result.verdict is not None and result.verdict.met is True
    assert sorted(p.name for p in result.files) == ["model.onnx", "report.html", "report.json"]
    assert (tmp_path / "dist" / "model.onnx").read_bytes() == b"optimized onnx"
    assert set(uploads) == {"mlp.onnx"}
    assert [e.data["name"] for e in events if e.event == "step"] == ["quantize"]


def test_optimize_of_a_missed_budget_exits_2_without_wait_it_is_queued(
    api: Client, fake_worker: Callable, mlp_onnx: Path
) -> None:
    api.sleep = fake_worker(met=False)

    missed = api.optimize(mlp_onnx, recipe="auto", constraints={"max_accuracy_drop": 0.01})
    queued = api.optimize(mlp_onnx, steps=[{"op": "quantize"}], wait=False)

    assert missed.exit_code == 2 and missed.files == []
    assert missed.job is not None and missed.job.spec["recipe"] == "auto"
    assert queued.job is not None and queued.job.status == "queued" and queued.exit_code == 0
