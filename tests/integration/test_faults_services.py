"""Faults of the servers around ModelPress, on servers of the test's own (never the shared ones):
Postgres stopped for a few seconds mid-job, Redis restarted with jobs queued in it. Every job
ends, none is lost or runs twice."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import is_service_setting

from app.core.config import get_settings
from app.db.migrate import upgrade_head

pytestmark = pytest.mark.integration
SLOW_BENCHMARK = {"batch_sizes": [1], "iterations": 2000, "time_budget_s": 8}
OUTAGE_SECONDS = 6.0


@contextlib.contextmanager
def _client(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def _upload_and_submit(client: Any, model: Path, helpers: Any) -> str:
    with model.open("rb") as fh:
        uploaded = client.post("/v1/models?wait=true", files={"file": ("m.onnx", fh)})
    assert uploaded.json()["status"] == "ready", uploaded.text
    spec = {
        "model_id": uploaded.json()["id"],
        "steps": [{"op": "quantize"}],
        "benchmark": SLOW_BENCHMARK,
        "constraints": {"fail_if_slower": False},
    }
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 202, job.text
    return str(job.json()["id"])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No MODELPRESS_* setting of the caller leaks in (the servers here are the test's own)."""
    for key in list(os.environ):
        if is_service_setting(key):
            monkeypatch.delenv(key)
    return {"MODELPRESS_AUTO_MIGRATE": "false", "MODELPRESS_SANDBOX_MEMORY_MB": "6144"}


@pytest.fixture
def pg_values(own_postgres: Any, tmp_path: Path, clean_env: dict[str, str]) -> dict[str, str]:
    upgrade_head(own_postgres.url)
    return {
        **clean_env,
        "MODELPRESS_DATABASE_URL": own_postgres.url,
        "MODELPRESS_DATA_DIR": str(tmp_path / "pgdata"),
        "MODELPRESS_JOB_LEASE_SECONDS": "30",
    }


def test_postgres_stopped_mid_job_neither_aborts_nor_repeats_it(
    own_postgres: Any,
    pg_values: dict[str, str],
    mlp_onnx: Path,
    helpers: Any,
    spawn: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = spawn(["worker", "--embedded"], helpers.process_env(pg_values), "worker")
    with _client(monkeypatch, pg_values) as client:
        job_id = _upload_and_submit(client, mlp_onnx, helpers)
        helpers.wait_for(
            lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running",
            60,
            "the job to run",
        )

        own_postgres.stop()
        time.sleep(OUTAGE_SECONDS)
        own_postgres.start()

        done = helpers.wait_job(client, job_id)
        assert done["status"] == "succeeded", done
        assert done["attempt"] == 1  # not aborted, not run again
        assert len({a["name"] for a in done["artifacts"]}) == len(done["artifacts"]) == 4
        # The whole log: a traceback after the warning can push it out of tail()'s window.
        log = worker.log.read_text(errors="replace")
        assert "heartbeat failed" in log or "database unavailable" in log, worker.tail()


@pytest.fixture
def redis_values(own_redis: Any, tmp_path: Path, clean_env: dict[str, str]) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'redis-mode.db'}"
    upgrade_head(url)
    return {
        **clean_env,
        "MODELPRESS_DATABASE_URL": url,
        "MODELPRESS_BROKER_URL": own_redis.url,
        "MODELPRESS_DATA_DIR": str(tmp_path / "redisdata"),
    }


def test_jobs_queued_in_a_redis_that_restarts_still_run_once(
    own_redis: Any,
    redis_values: dict[str, str],
    mlp_onnx: Path,
    helpers: Any,
    spawn: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker keeps nothing on disk: its restart loses the queued messages. The database is
    the truth: a worker starting re-publishes every queued job, each runs exactly once."""
    worker_env = helpers.process_env(redis_values)
    first = spawn(["worker", "--concurrency", "1"], worker_env, "celery-1")
    with _client(monkeypatch, redis_values) as client:
        with mlp_onnx.open("rb") as fh:
            uploaded = client.post("/v1/models?wait=true", files={"file": ("m.onnx", fh)})
        assert uploaded.json()["status"] == "ready", uploaded.text
        first.stop()
        spec = {"model_id": uploaded.json()["id"], "steps": [{"op": "quantize"}]}
        jobs = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(2)]

        own_redis.stop()  # the two messages are gone with it
        own_redis.start()
        spawn(["worker", "--concurrency", "1"], worker_env, "celery-2")

        for job_id in jobs:
            done = helpers.wait_job(client, job_id)
            assert done["status"] == "succeeded", done
            assert done["attempt"] == 1
