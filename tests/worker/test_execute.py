"""Jobs and inspections from the database with real sandbox children and no broker.

Rows are written straight into a real migrated database (SQLite, and Postgres where
TEST_DATABASE_URL is set); `execute_job` / `execute_inspection` then claim, run the child,
publish and finish exactly as the embedded worker and the Celery task do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from networks import onnx_fragile_mlp
from sqlalchemy import func, select, update
from support import is_service_setting

from app.core.config import Settings, get_settings
from app.core.storage import get_storage
from app.db.base import seconds_between, utcnow
from app.db.orm import Artifact, Dataset, Job, JobStatus, MlModel, ModelStatus, Tenant
from app.db.session import session_scope
from app.jobs import repository as jobs
from app.jobs.schemas import JobCreate
from app.jobs.service import spec_digest
from worker.execute import execute_inspection, execute_job
from worker.measure.inputs import synthesize_inputs
from worker.ort import signature
from worker.reaper import reap_expired

BACKENDS = ["sqlite", "postgresql"]
QUICK_BENCHMARK = {"batch_sizes": [1, 4], "iterations": 5}
# Minutes of benchmarking on the transformer: long enough to be cancelled while it runs.
LONG_BENCHMARK = {
    "batch_sizes": [64],
    "iterations": 2000,
    "time_budget_s": 1800,
    "input_shapes": {"input_ids": [64, 512]},
}
EXPECTED_ARTIFACTS = {
    ("model.onnx", "model"),
    ("report.json", "report"),
    ("report.html", "report"),
    ("manifest.json", "manifest"),
}
LIVENESS_SECONDS = 60.0


# ------------------------------------------------------------------------------- helpers


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(settings: Settings, data: bytes, tmp_dir: Path) -> tuple[str, str]:
    """Store `data` content-addressed; returns (storage key, sha256)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    staged = tmp_dir / uuid.uuid4().hex
    staged.write_bytes(data)
    digest = _sha256(data)
    return get_storage(settings).put(staged, digest), digest


def _tenant(url: str) -> str:
    with session_scope(url) as session:
        tenant = Tenant(name=f"tenant-{uuid.uuid4().hex[:12]}")
        session.add(tenant)
        session.flush()
        return tenant.id


def _signature(data: bytes) -> dict[str, Any]:
    """What inspection records for a model: its inputs and outputs (nothing for garbage)."""
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception:
        return {}
    inputs, outputs = signature(session)
    return {"inputs": inputs, "outputs": outputs}


def _model(
    settings: Settings,
    url: str,
    tenant_id: str,
    data: bytes,
    status: str = ModelStatus.ready,
) -> str:
    key, digest = _put(settings, data, settings.data_dir / "staging")
    inspected = _signature(data) if status == ModelStatus.ready else {}
    with session_scope(url) as session:
        model = MlModel(
            tenant_id=tenant_id,
            name="model.onnx",
            format="onnx",
            size_bytes=len(data),
            sha256=digest,
            storage_key=key,
            status=status,
            **inspected,
        )
        session.add(model)
        session.flush()
        return model.id


def _dataset(settings: Settings, url: str, tenant_id: str, arrays: dict[str, np.ndarray]) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    key, digest = _put(settings, data, settings.data_dir / "staging")
    with session_scope(url) as session:
        dataset = Dataset(
            tenant_id=tenant_id,
            name="eval.npz",
            size_bytes=len(data),
            sha256=digest,
            storage_key=key,
            arrays=[
                {"name": k, "shape": list(v.shape), "dtype": str(v.dtype)}
                for k, v in arrays.items()
            ],
            num_samples=len(next(iter(arrays.values()))),
        )
        session.add(dataset)
        session.flush()
        return dataset.id


def _job(url: str, tenant_id: str, model_id: str, **spec_fields: Any) -> str:
    spec = JobCreate.model_validate({"model_id": model_id, **spec_fields})
    with session_scope(url) as session:
        job = Job(
            tenant_id=tenant_id,
            model_id=model_id,
            spec=spec.model_dump(mode="json"),
            spec_sha256=spec_digest(spec),
            status=JobStatus.queued,
            progress={"fraction": 0.0, "message": "queued"},
            dispatched_at=utcnow(),
        )
        session.add(job)
        session.flush()
        return job.id


def _job_row(url: str, job_id: str) -> dict[str, Any]:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return {
            "status": job.status,
            "attempt": job.attempt,
            "error": job.error,
            "cancel_requested": job.cancel_requested,
            "lease_expires_at": job.lease_expires_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }


def _artifacts(url: str, job_id: str) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        return [
            {
                "name": a.name,
                "kind": a.kind,
                "size_bytes": a.size_bytes,
                "sha256": a.sha256,
                "storage_key": a.storage_key,
            }
            for a in rows
        ]


def _artifact_count(url: str, job_id: str) -> int:
    with session_scope(url) as session:
        stmt = select(func.count()).select_from(Artifact).where(Artifact.job_id == job_id)
        return int(session.scalar(stmt) or 0)


def _scratch_of(settings: Settings, prefix: str) -> list[str]:
    root = settings.scratch_root
    return [p.name for p in root.iterdir() if p.name.startswith(prefix)] if root.exists() else []


def _running_job(url: str, tenant_id: str, model_id: str, attempt: int, lease_s: int) -> str:
    """A job some worker claimed `attempt` times, whose lease ends `lease_s` from now."""
    job_id = _job(url, tenant_id, model_id, steps=[{"op": "quantize"}])
    with session_scope(url) as session:
        jobs.transition(
            session,
            job_id,
            {JobStatus.queued},
            {
                "status": JobStatus.running,
                "attempt": attempt,
                "worker": "gone-host:1",
                "started_at": utcnow(),
                "lease_expires_at": utcnow() + timedelta(seconds=lease_s),
            },
        )
    return job_id


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _isolate(mp: pytest.MonkeyPatch, data_dir: Path, url: str) -> None:
    """The same settings as the `env` fixture, plus one sandbox thread (2-core machines)."""
    for key in list(os.environ):
        if is_service_setting(key):
            mp.delenv(key)
    mp.setenv("MODELPRESS_DATA_DIR", str(data_dir))
    mp.setenv("MODELPRESS_DATABASE_URL", url)
    mp.setenv("MODELPRESS_AUTO_MIGRATE", "false")
    mp.setenv("MODELPRESS_SANDBOX_MEMORY_MB", "6144")
    mp.setenv("MODELPRESS_SANDBOX_THREADS", "1")
    get_settings.cache_clear()


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MODELPRESS_SANDBOX_THREADS", "1")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def url(env: dict[str, str]) -> str:
    return env["MODELPRESS_DATABASE_URL"]


@pytest.fixture
def tenant(url: str) -> str:
    return _tenant(url)


# ------------------------------------------------------- one successful job per backend


@pytest.fixture(scope="module", params=BACKENDS)
def finished(
    request: pytest.FixtureRequest,
    migrated_urls: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    mlp_onnx: Path,
) -> dict[str, Any]:
    """A quantize job on the MLP run to the end, then delivered a second time (JOB-06).

    Everything the tests look at is read back before the fixture returns, so the per-test
    database cleanup of other tests cannot disturb it.
    """
    if request.param not in migrated_urls:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = migrated_urls[request.param]
    data_dir = tmp_path_factory.mktemp(f"finished-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, data_dir, url)
        settings = get_settings()
        tenant_id = _tenant(url)
        model_id = _model(settings, url, tenant_id, mlp_onnx.read_bytes())
        job_id = _job(
            url, tenant_id, model_id, steps=[{"op": "quantize"}], benchmark=QUICK_BENCHMARK
        )

        first = execute_job(job_id, settings)
        artifacts_after_first = _artifacts(url, job_id)
        second = execute_job(job_id, settings)

        storage = get_storage(settings)
        artifacts = _artifacts(url, job_id)
        paths = {a["name"]: storage.path_of(a["storage_key"]) for a in artifacts}
        report_path = paths.get("report.json")
        snapshot = {
            "url": url,
            "job_id": job_id,
            "first": first,
            "second": second,
            "row": _job_row(url, job_id),
            "artifacts_after_first": artifacts_after_first,
            "artifacts": artifacts,
            "paths": paths,
            "report": json.loads(report_path.read_text()) if report_path else None,
            "scratch": _scratch_of(settings, f"job-{job_id}"),
        }
    get_settings.cache_clear()
    return snapshot


def test_job_succeeds(finished: dict[str, Any]) -> None:
    row = finished["row"]

    assert finished["first"] == JobStatus.succeeded
    assert row["status"] == JobStatus.succeeded
    assert row["error"] is None
    assert row["attempt"] == 1
    assert row["lease_expires_at"] is None
    assert row["finished_at"] is not None


def test_job_publishes_exactly_four_artifacts(finished: dict[str, Any]) -> None:
    artifacts = finished["artifacts"]

    names = {(a["name"], a["kind"]) for a in artifacts}

    assert len(artifacts) == 4
    assert names == EXPECTED_ARTIFACTS
    assert [a["kind"] for a in artifacts].count("model") == 1


def test_artifact_files_match_their_recorded_sha256(finished: dict[str, Any]) -> None:
    """DUR-10: every stored file hashes to the sha256 and size its row records."""
    rows = {a["name"]: a for a in finished["artifacts"]}

    actual = {
        name: (_sha256(path.read_bytes()), path.stat().st_size)
        for name, path in finished["paths"].items()
    }

    assert actual == {name: (a["sha256"], a["size_bytes"]) for name, a in rows.items()}


def test_second_delivery_is_a_no_op(finished: dict[str, Any]) -> None:
    """JOB-06: a finished job is not claimed again and gains no artifact."""
    before = finished["artifacts_after_first"]

    after = finished["artifacts"]

    assert finished["second"] is None
    assert sorted(a["storage_key"] for a in after) == sorted(a["storage_key"] for a in before)


def test_scratch_is_removed_after_success(finished: dict[str, Any]) -> None:
    leftovers = finished["scratch"]

    assert leftovers == []


def test_stored_model_is_int8_and_runs(finished: dict[str, Any]) -> None:
    session = _session(finished["paths"]["model.onnx"])

    outputs = session.run(None, {"input": np.ones((3, 32), dtype=np.float32)})

    assert outputs[0].shape == (3, 10)
    assert np.isfinite(outputs[0]).all()


def test_report_fidelity_is_what_a_user_measures(finished: dict[str, Any], mlp_onnx: Path) -> None:
    """The downloaded model's error vs the original, on the documented inputs, is the report's."""
    feeds = synthesize_inputs(mlp_onnx, 32, None, seed=1000)  # manifest: 1000 + chunk index

    reference = _session(mlp_onnx).run(None, feeds)[0].astype(np.float64)
    candidate = _session(finished["paths"]["model.onnx"]).run(None, feeds)[0].astype(np.float64)

    fidelity = finished["report"]["fidelity"]
    assert fidelity["samples"] == 32
    assert fidelity["outputs"]["output"]["max_abs_error"] == pytest.approx(
        float(np.abs(reference - candidate).max()), rel=1e-6
    )


def test_report_sizes_are_the_real_file_sizes(finished: dict[str, Any], mlp_onnx: Path) -> None:
    report = finished["report"]

    model_size = finished["paths"]["model.onnx"].stat().st_size

    assert report["baseline"]["size_bytes"] == mlp_onnx.stat().st_size
    assert report["optimized"]["size_bytes"] == model_size


def test_report_latency_is_keyed_by_batch_size(finished: dict[str, Any]) -> None:
    report = finished["report"]

    latency = {label: report[label]["latency_ms"] for label in ("baseline", "optimized")}

    for stats in latency.values():
        assert set(stats) == {"1", "4"}
        for batch in stats.values():
            assert {"p50", "p90", "p99"} <= set(batch)
            assert 0 < batch["p50"] <= batch["p90"] <= batch["p99"]


def test_report_steps_carry_the_quantize_metrics(finished: dict[str, Any]) -> None:
    steps = finished["report"]["steps"]

    metrics = steps[0]["metrics"]

    assert [s["op"] for s in steps] == ["quantize"]
    assert metrics["nodes_quantized"] == 2
    assert {"quantized_nodes", "float_nodes", "op_types_after"} <= set(metrics)


def test_report_environment_names_the_libraries(finished: dict[str, Any]) -> None:
    environment = finished["report"]["environment"]

    libraries = environment["libraries"]

    assert libraries["onnxruntime"] == ort.__version__
    assert {"onnx", "numpy"} <= set(libraries)


def test_report_runs_the_guard_without_budget(finished: dict[str, Any]) -> None:
    verdict = finished["report"]["verdict"]

    assert isinstance(verdict["met"], bool)
    guard = [r.split(": ", 1)[1] for r in verdict["reasons"]]
    assert guard[0].startswith("`output` is not collapsed")
    assert guard[1] == "not slower than the original beyond the noise at any batch size"
    assert verdict["met"] is all(r.startswith("met: ") for r in verdict["reasons"])
    assert verdict["met"] or verdict["notes"][0].startswith("Not recommended:")


def test_report_timings_break_the_job_down(finished: dict[str, Any]) -> None:
    """`timings` (PRODUCT.md "Report"): every phase measured, the parts inside their whole, and
    the whole inside the job's own wall time from its row."""
    timings, report = finished["report"]["timings"], finished["report"]
    phases = ("queue_wait_s", "stage_s", "sandbox_start_s", "prepare_s", "steps_s", "deliver_s")
    for name in (*phases, "benchmark_s", "report_s", "child_total_s"):
        assert timings[name] >= 0, name
    assert timings["sandbox_start_s"] > 0  # a fresh interpreter cannot start in no time
    assert [s["op"] for s in timings["steps"]] == [s["op"] for s in report["steps"]]
    assert sum(s["wall_s"] for s in timings["steps"]) <= timings["steps_s"] + 0.01
    parts = timings["benchmark"]
    assert {"load_s", "latency_s", "fidelity_s"} <= set(parts)
    assert sum(parts.values()) <= timings["benchmark_s"] + 0.01
    child = ("prepare_s", "steps_s", "deliver_s", "benchmark_s", "report_s")
    assert sum(timings[k] for k in child) <= timings["child_total_s"] + 0.01
    row = finished["row"]
    ran = seconds_between(row["started_at"], row["finished_at"])
    assert ran is not None
    assert timings["stage_s"] + timings["sandbox_start_s"] + timings["child_total_s"] <= ran + 0.5


# ----------------------------------------------------------------------- claims (JOB-06)


def test_second_claim_gets_nothing(url: str, settings: Settings, tenant: str) -> None:
    """JOB-06: two deliveries of one message; only the first claims the job."""
    model_id = _model(settings, url, tenant, b"unused")
    job_id = _job(url, tenant, model_id, steps=[{"op": "quantize"}])

    with session_scope(url) as session:
        first = jobs.claim(session, job_id, "worker-a", 60)
    with session_scope(url) as session:
        second = jobs.claim(session, job_id, "worker-b", 60)

    assert first == 1
    assert second is None


def test_job_with_a_lapsed_lease_can_be_claimed_again(
    url: str, settings: Settings, tenant: str
) -> None:
    """JOB-02: a redelivery after the worker's lease lapsed takes the job as attempt 2."""
    model_id = _model(settings, url, tenant, b"unused")
    job_id = _running_job(url, tenant, model_id, attempt=1, lease_s=-60)

    with session_scope(url) as session:
        attempt = jobs.claim(session, job_id, "worker-b", 60)

    assert attempt == 2


def test_job_with_a_live_lease_is_not_claimed(url: str, settings: Settings, tenant: str) -> None:
    model_id = _model(settings, url, tenant, b"unused")
    job_id = _running_job(url, tenant, model_id, attempt=1, lease_s=60)

    with session_scope(url) as session:
        attempt = jobs.claim(session, job_id, "worker-b", 60)

    assert attempt is None


# ------------------------------------------------------------------------------ failures


def test_job_on_a_corrupt_model_fails_with_a_problem(
    url: str, settings: Settings, tenant: str
) -> None:
    model_id = _model(settings, url, tenant, os.urandom(4096))
    job_id = _job(url, tenant, model_id, steps=[{"op": "quantize"}], benchmark=QUICK_BENCHMARK)

    status = execute_job(job_id, settings)

    row = _job_row(url, job_id)
    assert status == row["status"] == JobStatus.failed
    assert set(row["error"]) >= {"type", "title", "status", "detail", "code"}
    assert row["error"]["code"], row["error"]
    assert str(settings.scratch_root) not in row["error"]["detail"]
    assert _artifact_count(url, job_id) == 0


def test_failed_job_leaves_no_scratch(url: str, settings: Settings, tenant: str) -> None:
    model_id = _model(settings, url, tenant, os.urandom(4096))
    job_id = _job(url, tenant, model_id, steps=[{"op": "quantize"}], benchmark=QUICK_BENCHMARK)

    execute_job(job_id, settings)

    assert _scratch_of(settings, f"job-{job_id}") == []


def test_optimize_job_succeeds(url: str, settings: Settings, tenant: str, mlp_onnx: Path) -> None:
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes())
    job_id = _job(url, tenant, model_id, steps=[{"op": "optimize"}], benchmark=QUICK_BENCHMARK)

    status = execute_job(job_id, settings)

    row = _job_row(url, job_id)
    assert status == JobStatus.succeeded, row["error"]
    assert row["error"] is None
    assert _artifact_count(url, job_id) == 4


# ---------------------------------------------------------------------------- inspection


def test_inspection_marks_a_valid_model_ready(
    url: str, settings: Settings, tenant: str, mlp_onnx: Path, mlp_module: Any
) -> None:
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes(), ModelStatus.validating)

    status = execute_inspection(model_id, settings)

    with session_scope(url) as session:
        model = session.get(MlModel, model_id)
        assert model is not None
        assert status == model.status == ModelStatus.ready
        assert model.inputs == [{"name": "input", "dtype": "float32", "shape": ["batch", 32]}]
        assert model.outputs == [{"name": "output", "dtype": "float32", "shape": ["batch", 10]}]
        assert model.parameter_count == sum(p.numel() for p in mlp_module.parameters())
        assert model.error is None
    assert _scratch_of(settings, f"inspect-{model_id}") == []


def test_inspection_rejects_garbage(url: str, settings: Settings, tenant: str) -> None:
    model_id = _model(settings, url, tenant, os.urandom(4096), ModelStatus.validating)

    status = execute_inspection(model_id, settings)

    with session_scope(url) as session:
        model = session.get(MlModel, model_id)
        assert model is not None
        assert status == model.status == ModelStatus.rejected
        assert model.error["code"] == "model_rejected"
        assert model.inputs is None
    assert _scratch_of(settings, f"inspect-{model_id}") == []


def test_an_inspection_that_never_finishes_is_rejected_after_its_attempts(
    url: str, settings: Settings, tenant: str, mlp_onnx: Path
) -> None:
    """Each earlier attempt's worker died under it: it must not block the queue forever."""
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes(), ModelStatus.validating)
    with session_scope(url) as session:
        session.execute(
            update(MlModel)
            .where(MlModel.id == model_id)
            .values(inspect_attempts=settings.inspect_max_attempts)
        )

    status = execute_inspection(model_id, settings)

    with session_scope(url) as session:
        model = session.get(MlModel, model_id)
        assert model is not None
        assert status == model.status == ModelStatus.rejected
        assert model.error["code"] == "inspection_failed"
    assert _scratch_of(settings, f"inspect-{model_id}") == []


def test_each_inspection_counts_an_attempt(
    url: str, settings: Settings, tenant: str, mlp_onnx: Path
) -> None:
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes(), ModelStatus.validating)

    assert execute_inspection(model_id, settings) == ModelStatus.ready

    with session_scope(url) as session:
        model = session.get(MlModel, model_id)
        assert model is not None and model.inspect_attempts == 1


def test_inspection_of_a_finished_model_is_a_no_op(
    url: str, settings: Settings, tenant: str, mlp_onnx: Path
) -> None:
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes(), ModelStatus.ready)

    status = execute_inspection(model_id, settings)

    assert status is None


# -------------------------------------------------------------------- reaper (JOB-01/02)


def test_reaper_requeues_an_expired_job_with_attempts_left(
    url: str, settings: Settings, tenant: str
) -> None:
    """JOB-01/JOB-02: a running job whose worker died goes back to the queue."""
    model_id = _model(settings, url, tenant, b"unused")
    job_id = _running_job(url, tenant, model_id, attempt=1, lease_s=-60)

    reaped = reap_expired(settings)

    row = _job_row(url, job_id)
    assert reaped == 1
    assert row["status"] == JobStatus.queued
    assert row["lease_expires_at"] is None
    assert row["attempt"] == 1


def test_reaper_fails_an_expired_job_at_its_last_attempt(
    url: str, settings: Settings, tenant: str
) -> None:
    """JOB-01/JOB-07: redeliveries are capped; the last lost attempt fails `worker_lost`."""
    model_id = _model(settings, url, tenant, b"unused")
    job_id = _running_job(url, tenant, model_id, attempt=settings.job_max_attempts, lease_s=-60)

    reap_expired(settings)

    row = _job_row(url, job_id)
    assert row["status"] == JobStatus.failed
    assert row["error"]["code"] == "worker_lost"
    assert row["finished_at"] is not None


def test_reaper_leaves_a_live_job_alone(url: str, settings: Settings, tenant: str) -> None:
    model_id = _model(settings, url, tenant, b"unused")
    job_id = _running_job(url, tenant, model_id, attempt=1, lease_s=60)

    reaped = reap_expired(settings)

    assert reaped == 0
    assert _job_row(url, job_id)["status"] == JobStatus.running


def test_reaper_cancels_an_expired_job_whose_cancel_was_requested(
    url: str, settings: Settings, tenant: str
) -> None:
    """docs/reliability.md §3.3: a job flagged for cancel whose worker died ends `cancelled`.

    Requeued instead, it could never be claimed again (claims skip cancel-requested jobs).
    """
    model_id = _model(settings, url, tenant, b"unused")
    job_id = _running_job(url, tenant, model_id, attempt=1, lease_s=-60)
    with session_scope(url) as session:
        jobs.transition(session, job_id, {JobStatus.running}, {"cancel_requested": True})

    reap_expired(settings)

    assert _job_row(url, job_id)["status"] == JobStatus.cancelled


# ------------------------------------------------------------------ cancellation (JOB-12)


def _wait_for_status(url: str, job_id: str, status: str) -> bool:
    deadline = time.monotonic() + LIVENESS_SECONDS
    while time.monotonic() < deadline:
        if _job_row(url, job_id)["status"] == status:
            return True
        time.sleep(0.1)
    return False


def test_cancel_while_running_stops_the_job(
    url: str, settings: Settings, tenant: str, transformer_onnx: Path
) -> None:
    """JOB-12: a cancel flagged while the job runs kills the child; `cancelled`, no artifacts."""
    model_id = _model(settings, url, tenant, transformer_onnx.read_bytes())
    job_id = _job(url, tenant, model_id, steps=[{"op": "quantize"}], benchmark=LONG_BENCHMARK)
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.update(status=execute_job(job_id, settings)), daemon=True
    )
    worker.start()
    assert _wait_for_status(url, job_id, JobStatus.running)

    with session_scope(url) as session:
        jobs.transition(session, job_id, {JobStatus.running}, {"cancel_requested": True})
    worker.join(timeout=LIVENESS_SECONDS)

    assert not worker.is_alive()
    assert result["status"] == JobStatus.cancelled
    assert _job_row(url, job_id)["status"] == JobStatus.cancelled
    assert _artifact_count(url, job_id) == 0
    assert _scratch_of(settings, f"job-{job_id}") == []


# -------------------------------------------------------------------------- evaluation


@pytest.fixture
def labelled_mlp_data(mlp_onnx: Path) -> dict[str, np.ndarray]:
    """200 inputs labelled with the original model's own argmax (baseline accuracy 1.0)."""
    inputs = np.random.default_rng(3).standard_normal((200, 32), dtype=np.float32)
    labels = _session(mlp_onnx).run(None, {"input": inputs})[0].argmax(axis=1)
    return {"input": inputs, "labels": labels.astype(np.int64)}


def _evaluated_job(
    url: str, settings: Settings, tenant: str, mlp_onnx: Path, data: dict[str, np.ndarray]
) -> str:
    """A queued quantize job evaluated on `data` with a loose 50-point budget."""
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes())
    dataset_id = _dataset(settings, url, tenant, data)
    return _job(
        url,
        tenant,
        model_id,
        steps=[{"op": "quantize"}],
        benchmark=QUICK_BENCHMARK,
        evaluation={"dataset_id": dataset_id, "metric": "accuracy"},
        # Speed on a tiny MLP is noise: only the accuracy budget is under test here.
        constraints={"max_accuracy_drop": 0.5, "fail_if_slower": False},
    )


def test_evaluation_reports_the_accuracy_a_user_measures(
    url: str,
    settings: Settings,
    tenant: str,
    mlp_onnx: Path,
    labelled_mlp_data: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    job_id = _evaluated_job(url, settings, tenant, mlp_onnx, labelled_mlp_data)

    status = execute_job(job_id, settings)

    assert status == JobStatus.succeeded
    storage = get_storage(settings)
    stored = {a["name"]: storage.path_of(a["storage_key"]) for a in _artifacts(url, job_id)}
    model = tmp_path / "downloaded.onnx"
    shutil.copyfile(stored["model.onnx"], model)
    accuracy = json.loads(stored["report.json"].read_text())["accuracy"]
    session, batch, images = _session(model), accuracy["batch_size"], labelled_mlp_data["input"]
    logits = [
        session.run(None, {"input": images[i : i + batch]})[0] for i in range(0, len(images), batch)
    ]
    predicted = np.concatenate(logits).argmax(1)
    measured = float((predicted == labelled_mlp_data["labels"]).mean())
    assert accuracy["metric"] == "accuracy"
    assert accuracy["baseline"] == 1.0
    assert accuracy["optimized"] == measured
    assert accuracy["drop"] == 1.0 - measured
    assert accuracy["samples"] == 200


def test_evaluation_verdict_meets_a_loose_budget(
    url: str,
    settings: Settings,
    tenant: str,
    mlp_onnx: Path,
    labelled_mlp_data: dict[str, np.ndarray],
) -> None:
    job_id = _evaluated_job(url, settings, tenant, mlp_onnx, labelled_mlp_data)

    execute_job(job_id, settings)

    storage = get_storage(settings)
    report_key = next(a for a in _artifacts(url, job_id) if a["name"] == "report.json")
    verdict = json.loads(storage.path_of(report_key["storage_key"]).read_text())["verdict"]
    assert verdict["met"] is True
    assert any(reason.startswith("met: accuracy drop") for reason in verdict["reasons"])


def test_keep_float_auto_meets_the_jobs_max_accuracy_drop_end_to_end(
    url: str, settings: Settings, tenant: str, tmp_path: Path
) -> None:
    """A network with one fragile layer: all int8 collapses its accuracy. `keep_float: auto`
    with only `max_accuracy_drop` (no min_cosine) keeps that layer float, judged on the job's
    evaluation labels, and the report's own accuracy row meets the budget."""
    fragile = onnx_fragile_mlp(tmp_path / "fragile.onnx")
    inputs = np.random.default_rng(4).standard_normal((256, 32), dtype=np.float32)
    labels = _session(fragile).run(None, {"x": inputs})[0].argmax(axis=1).astype(np.int64)
    model_id = _model(settings, url, tenant, fragile.read_bytes())
    dataset_id = _dataset(settings, url, tenant, {"x": inputs, "labels": labels})
    job_id = _job(
        url,
        tenant,
        model_id,
        steps=[{"op": "quantize", "keep_float": "auto"}],
        benchmark=QUICK_BENCHMARK,
        evaluation={"dataset_id": dataset_id, "metric": "accuracy"},
        constraints={"max_accuracy_drop": 0.03, "fail_if_slower": False},
    )

    status = execute_job(job_id, settings)

    assert status == JobStatus.succeeded
    storage = get_storage(settings)
    report_key = next(a for a in _artifacts(url, job_id) if a["name"] == "report.json")
    report = json.loads(storage.path_of(report_key["storage_key"]).read_text())
    metrics = report["steps"][0]["metrics"]
    assert metrics["sensitivity_inputs"] == f"evaluation dataset {dataset_id}"
    assert metrics["keep_float"]["target_accuracy_drop"] == 0.03
    assert "down" in metrics["keep_float"]["kept_float"]
    assert len(metrics["keep_float"]["kept_float"]) < 3
    assert report["accuracy"]["drop"] <= 0.03
    assert report["verdict"]["met"] is True


def test_a_broken_result_succeeds_but_is_not_recommended(
    url: str, settings: Settings, tenant: str, mlp_onnx: Path
) -> None:
    """The guard end to end: 99% of the weights zeroed collapses the outputs; the job still
    succeeds with its one model artifact, and the verdict says first why it is not recommended."""
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes())
    steps = [{"op": "prune", "method": "magnitude", "sparsity": 0.99}]
    job_id = _job(url, tenant, model_id, steps=steps, benchmark=QUICK_BENCHMARK)

    status = execute_job(job_id, settings)

    assert status == JobStatus.succeeded
    artifacts = _artifacts(url, job_id)
    assert [a["kind"] for a in artifacts].count("model") == 1
    report_key = next(a for a in artifacts if a["name"] == "report.json")
    report = json.loads(get_storage(settings).path_of(report_key["storage_key"]).read_text())
    verdict = report["verdict"]
    assert verdict["met"] is False
    # Broken leads the notes (a slowness miss, when the machine is busy, comes after it).
    assert verdict["notes"][0].startswith("Not recommended: `output` is not collapsed")
    assert report["fidelity"]["outputs"]["output"]["cosine_mean"] < 0.9


# ---------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that fills up (skips loudly where mounting is not permitted)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"CANNOT MOUNT A SMALL TMPFS HERE: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_up_mid_job_fails_it_cleanly(
    url: str, tenant: str, small_disk: Path, mlp_onnx: Path
) -> None:
    """ENOSPC in the middle of a job ends it `failed` `insufficient_storage`, its scratch gone;
    with space again, the next job succeeds."""
    settings = Settings(data_dir=small_disk / "data", database_url=url)
    model_id = _model(settings, url, tenant, mlp_onnx.read_bytes())
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 48 * 1024))  # room to stage the model, not to finish
    job_id = _job(url, tenant, model_id, steps=[{"op": "quantize"}], benchmark=QUICK_BENCHMARK)

    assert execute_job(job_id, settings) == JobStatus.failed

    row = _job_row(url, job_id)
    assert row["status"] == JobStatus.failed
    assert row["error"]["code"] == "insufficient_storage", row["error"]
    assert _scratch_of(settings, f"job-{job_id}") == []
    filler.unlink()
    again = _job(url, tenant, model_id, steps=[{"op": "quantize"}], benchmark=QUICK_BENCHMARK)
    assert execute_job(again, settings) == JobStatus.succeeded
