"""Finished jobs logged as MLflow runs on a REAL tracking server (`mlflow server`, a SQLite store
and served artifacts, started once for this module): a real job through the API and the worker,
then the housekeeping tick; a server that is down is retried with backoff and the run appears
once it is back, exactly once."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import select, update

from app.core.config import get_settings
from app.db.base import utcnow
from app.db.orm import JobStatus, WebhookDelivery
from app.db.session import session_scope
from app.tracking import service as tracking
from app.webhooks import service as webhooks
from worker import reaper
from worker.execute import execute_job

EXPERIMENT = "modelpress-tests"
BENCHMARK = {"batch_sizes": [1, 4], "iterations": 5}
SERVER_START_S = 120.0
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """`mlflow server` on a fixed port with its stores under `root`; stop() and start() again
    keep its runs (the same SQLite file and artifact directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [str(Path(sys.executable).with_name("mlflow")), "server"]
        argv += ["--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        argv += ["--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts"]
        argv += ["--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--workers", "1"]
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no huey job runners
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=log, start_new_session=True, cwd=self.root
        )
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"mlflow server did not start: {self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        deadline = time.monotonic() + 10  # its uvicorn child lets go of the port
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/health", timeout=1)
            except httpx.HTTPError:
                return
            time.sleep(0.2)

    def tail(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tracked(
    env: dict[str, str], mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> MlflowClient:
    """Settings that log jobs to the module's server (a 60 s first backoff); a client of it."""
    if mlflow_server.proc is None or mlflow_server.proc.poll() is not None:
        mlflow_server.start()  # a test that stopped it failed before starting it again
    values = {
        "MODELPRESS_MLFLOW_TRACKING_URI": mlflow_server.url,
        "MODELPRESS_MLFLOW_EXPERIMENT": EXPERIMENT,
        "MODELPRESS_MLFLOW_TIMEOUT_SECONDS": "10",
        "MODELPRESS_WEBHOOK_BACKOFF_SECONDS": "60",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    _sender_defaults(monkeypatch)
    get_settings.cache_clear()
    return MlflowClient(tracking_uri=mlflow_server.url)


def _sender_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender sets MLflow's request retries and timeout when unset: undo that after."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)


def _dataset(client: Any, mlp_onnx: Path) -> str:
    """200 inputs labelled with the original model's own argmax (baseline accuracy 1.0)."""
    inputs = np.random.default_rng(5).standard_normal((200, 32), dtype=np.float32)
    session = ort.InferenceSession(str(mlp_onnx), providers=["CPUExecutionProvider"])
    labels = session.run(None, {"input": inputs})[0].argmax(axis=1).astype(np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, input=inputs, labels=labels)
    response = client.post("/v1/datasets", files={"file": ("eval.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _finished_job(client: Any, model_id: str, dataset_id: str) -> dict[str, Any]:
    """A real quantize job, submitted through the API and run by the worker code."""
    spec = {
        "model_id": model_id,
        "steps": [{"op": "quantize", "mode": "dynamic"}],
        "benchmark": BENCHMARK,
        "evaluation": {"dataset_id": dataset_id, "metric": "accuracy"},
        "constraints": {"max_accuracy_drop": 0.5, "fail_if_slower": False},
    }
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert execute_job(job_id, get_settings()) == JobStatus.succeeded
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    return dict(job)


def _row(job_id: str) -> WebhookDelivery:
    with session_scope() as session:
        stmt = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        [row] = session.scalars(stmt).all()  # one: no callback_url, so no webhook beside it
        return row


def _runs(mlflow: MlflowClient, job_id: str) -> list[Any]:
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    query = f"tags.`modelpress.job_id` = '{job_id}'"
    return list(mlflow.search_runs([experiment.experiment_id], filter_string=query))


def _expected_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The numbers the report has, under the names the README documents."""
    expected: dict[str, float] = {}
    for side, prefix in (("optimized", ""), ("baseline", "baseline_")):
        for batch, stats in report[side]["latency_ms"].items():
            expected[f"{prefix}latency_p50_ms_b{batch}"] = stats["p50"]
        expected[f"{prefix}size_bytes"] = report[side]["size_bytes"]
    for batch, value in report["comparison"]["speedup"].items():
        expected[f"speedup_b{batch}"] = value
    expected["size_ratio"] = report["comparison"]["size_ratio"]
    [output] = report["fidelity"]["outputs"].values()
    for name in ("cosine_mean", "cosine_min", "top1_agreement"):
        if output.get(name) is not None:
            expected[name] = output[name]
    expected["accuracy_drop"] = report["accuracy"]["drop"]
    expected["accuracy_baseline"] = report["accuracy"]["baseline"]
    expected["accuracy_optimized"] = report["accuracy"]["optimized"]
    return expected


def test_a_finished_job_becomes_one_mlflow_run(
    tracked: MlflowClient, client: Any, model_id: str, mlp_onnx: Path, tmp_path: Path
) -> None:
    dataset_id = _dataset(client, mlp_onnx)
    job = _finished_job(client, model_id, dataset_id)
    row = _row(job["id"])
    assert (row.event, row.status, row.url) == (tracking.EVENT, "pending", tracked.tracking_uri)

    reaper.tick(get_settings())

    row = _row(job["id"])
    assert (row.status, row.attempts, row.last_error) == ("delivered", 1, None), row.last_error
    [run] = _runs(tracked, job["id"])
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert run.info.run_name == f"modelpress-{job['id']}"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model_id"] == model_id
    assert params["steps.0.op"] == "quantize" and params["steps.0.mode"] == "dynamic"
    assert params["benchmark.batch_sizes"] == "[1, 4]"
    assert params["evaluation.dataset_id"] == dataset_id
    assert params["constraints.max_accuracy_drop"] == "0.5"
    tags = run.data.tags
    assert report["verdict"]["met"] is True
    assert tags["modelpress.verdict"] == "met"
    assert (tags["modelpress.job_id"], tags["modelpress.model_id"]) == (job["id"], model_id)
    assert (tags["modelpress.status"], tags["modelpress.ops"]) == ("succeeded", "quantize")
    assert run.data.metrics == pytest.approx(_expected_metrics(report), rel=1e-12)
    artifacts = {a.path: a.file_size for a in tracked.list_artifacts(run.info.run_id)}
    published = {a["name"]: a for a in job["artifacts"]}
    assert set(artifacts) == {"model.onnx", "report.json", "report.html", "manifest.json"}
    assert {name: published[name]["size_bytes"] for name in artifacts} == artifacts
    downloaded = Path(tracked.download_artifacts(run.info.run_id, "report.json", str(tmp_path)))
    assert json.loads(downloaded.read_text()) == report
    model = Path(tracked.download_artifacts(run.info.run_id, "model.onnx", str(tmp_path)))
    assert hashlib.sha256(model.read_bytes()).hexdigest() == published["model.onnx"]["sha256"]


def test_a_down_server_is_retried_with_backoff_and_the_run_appears_once(
    tracked: MlflowClient,
    mlflow_server: MlflowServer,
    client: Any,
    model_id: str,
    mlp_onnx: Path,
    env: dict[str, str],
) -> None:
    if env["MODELPRESS_DATABASE_URL"].startswith("postgresql"):
        # ~30 s more of CI for no new code path: the outbox's claim, backoff and record run on
        # Postgres in tests/webhooks/ and in the test above.
        pytest.skip("the retry path runs on SQLite only")
    dataset_id = _dataset(client, mlp_onnx)
    mlflow_server.stop()

    job = _finished_job(client, model_id, dataset_id)  # succeeds with the server down
    settings, now, delays = get_settings(), utcnow(), []
    for _ in range(2):
        started = time.monotonic()
        assert webhooks.deliver_due(settings, now=now) == 1
        assert time.monotonic() - started < 15  # no minutes of MLflow's own retries
        row = _row(job["id"])
        assert row.status == "pending" and "Connection" in str(row.last_error), row.last_error
        assert row.last_attempt_at is not None
        delays.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
        assert webhooks.deliver_due(settings, now=row.next_attempt_at - timedelta(seconds=1)) == 0
        now = row.next_attempt_at
    assert delays == [60.0, 120.0]
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"

    mlflow_server.start()
    # An earlier attempt that created the run and then died: the next one must reuse it.
    found = tracked.get_experiment_by_name(EXPERIMENT)
    experiment_id = found.experiment_id if found else tracked.create_experiment(EXPERIMENT)
    partial = tracked.create_run(experiment_id, tags={"modelpress.job_id": job["id"]})
    assert webhooks.deliver_due(settings, now=now) == 1

    row = _row(job["id"])
    assert (row.status, row.attempts) == ("delivered", 3), row.last_error
    [run] = _runs(tracked, job["id"])
    assert run.info.run_id == partial.info.run_id
    assert run.info.status == "FINISHED" and run.data.tags["modelpress.verdict"] == "met"
    assert "speedup_b4" in run.data.metrics

    # A sender that logged everything but died before recording it: sent again, still one run.
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == row.id)
            .values(status="pending", next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    assert webhooks.deliver_due(settings) == 1
    assert _row(job["id"]).status == "delivered"
    [again] = _runs(tracked, job["id"])
    assert again.info.run_id == run.info.run_id
    assert len(tracked.get_metric_history(run.info.run_id, "size_ratio")) == 1
    names = [a.path for a in tracked.list_artifacts(run.info.run_id)]
    assert sorted(names) == ["manifest.json", "model.onnx", "report.html", "report.json"]


def test_a_round_tries_one_mlflow_run_while_the_server_is_down(
    env: dict[str, str], client: Any, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens there: one failed run, and the round leaves the other for later."""
    monkeypatch.setenv("MODELPRESS_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    _sender_defaults(monkeypatch)
    get_settings.cache_clear()
    job_ids = []
    for _ in range(2):
        response = client.post(
            "/v1/jobs", json={"model_id": model_id, "steps": [{"op": "quantize"}]}
        )
        job_ids.append(response.json()["id"])
        assert client.post(f"/v1/jobs/{job_ids[-1]}/cancel").status_code == 200

    assert webhooks.deliver_due(get_settings()) == 1

    rows = sorted((_row(job_id) for job_id in job_ids), key=lambda r: r.attempts)
    assert [(r.status, r.attempts) for r in rows] == [("pending", 0), ("pending", 1)]
    assert rows[0].payload["job"]["status"] == "cancelled" and rows[0].payload["artifacts"] == []
    assert "Connection" in str(rows[1].last_error)


API_SCRIPT = textwrap.dedent(
    """
    import sys
    from fastapi.testclient import TestClient
    from app.db.migrate import upgrade_head
    from app.core.config import get_settings
    from app.core.auth import default_tenant_id
    from app.db.orm import Job, MlModel
    from app.db.session import session_scope
    from app.main import create_app

    upgrade_head(get_settings().resolved_database_url)
    with session_scope() as session:
        model = MlModel(tenant_id=default_tenant_id(session), name="m.onnx", format="onnx",
                        size_bytes=1, sha256="0" * 64, storage_key="k", status="ready")
        session.add(model)
        session.flush()
        job = Job(tenant_id=model.tenant_id, model_id=model.id, spec_sha256="0",
                  spec={"model_id": model.id, "steps": [{"op": "quantize"}]})
        session.add(job)
        session.flush()
        job_id = job.id
    with TestClient(create_app()) as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    with session_scope() as session:
        from sqlalchemy import text
        print("ROWS=" + str(session.execute(text(
            "select count(*) from webhook_delivery where event = 'mlflow.run'")).scalar()))
    print("MLFLOW=" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")))
    """
)


def test_the_api_process_enqueues_runs_without_importing_mlflow(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MODELPRESS_DATA_DIR": str(tmp_path / "data"),
        "MODELPRESS_MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "PYTHONPATH": str(ROOT),
    }

    done = subprocess.run(
        [sys.executable, "-c", API_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "ROWS=1" in lines  # the cancel wrote the run's outbox row
    assert "MLFLOW=" in lines, lines
