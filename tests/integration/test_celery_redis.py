"""Redis mode end to end: the API publishes to real Redis, a real Celery worker process runs the
inspection and the job in sandbox children, and the artifact matches the original model."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from app.core.config import get_settings

pytestmark = pytest.mark.integration
REDIS_DB = 13  # a database of its own, flushed by this test


@pytest.fixture
def redis_url() -> str:
    base = os.environ.get("TEST_REDIS_URL")
    if not base:
        pytest.skip("TEST_REDIS_URL is not set")
    url = f"{base.split('/')[0]}//{base.split('/')[2]}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def redis_client(
    env: dict[str, str],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    spawn: Callable,
    helpers: Any,
) -> Any:
    """The API in this process (publishing to Redis) and a Celery worker process beside it."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    monkeypatch.setenv("MODELPRESS_BROKER_URL", redis_url)
    get_settings.cache_clear()
    worker_env = helpers.process_env({**env, "MODELPRESS_BROKER_URL": redis_url})
    worker = spawn(["worker", "--concurrency", "1"], worker_env, "celery-worker")
    with TestClient(create_app()) as client:
        client.worker = worker
        yield client


def test_job_runs_through_redis_and_a_celery_worker(
    redis_client: Any, mlp_onnx: Path, helpers: Any, tmp_path: Path
) -> None:
    with mlp_onnx.open("rb") as fh:
        model = redis_client.post("/v1/models?wait=true", files={"file": ("mlp.onnx", fh)}).json()
    assert model["status"] == "ready", redis_client.worker.tail()
    spec = {
        "model_id": model["id"],
        "steps": [{"op": "quantize"}],
        "benchmark": {"batch_sizes": [1, 4], "iterations": 5},
    }

    job = redis_client.post("/v1/jobs", json=spec).json()
    done = helpers.wait_job(redis_client, job["id"])

    assert done["status"] == "succeeded", (done, redis_client.worker.tail())
    assert done["attempt"] == 1
    downloaded = tmp_path / "model.onnx"
    downloaded.write_bytes(redis_client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx").content)
    feeds = {"input": np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)}
    original, quantized = helpers.outputs(mlp_onnx, feeds), helpers.outputs(downloaded, feeds)
    assert helpers.cosine(original[0], quantized[0]) > 0.99
    report = redis_client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["optimized"]["size_bytes"] == downloaded.stat().st_size
    assert set(report["optimized"]["latency_ms"]) == {"1", "4"}
