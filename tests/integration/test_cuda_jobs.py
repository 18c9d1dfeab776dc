"""`device: cuda` jobs: refused where no CUDA pool is configured, routed to the CUDA queue where
one is, and failed with a reason by a worker that has no GPU (this machine has none)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from app.core.config import get_settings
from app.core.queue import CPU_QUEUE, CUDA_QUEUE, job_queue
from worker.embedded import work_once

pytestmark = pytest.mark.integration


def _ready_model(client: Any, path: Path) -> str:
    with path.open("rb") as fh:
        model_id = client.post("/v1/models", files={"file": ("m.onnx", fh)}).json()["id"]
    work_once(get_settings(), threading.Event())
    return model_id


def test_cuda_jobs_go_to_the_cuda_queue() -> None:
    assert (job_queue("cuda"), job_queue("cpu")) == (CUDA_QUEUE, CPU_QUEUE)


def test_a_cuda_job_is_refused_without_a_cuda_pool(client: Any, mlp_onnx: Path) -> None:
    model_id = _ready_model(client, mlp_onnx)

    response = client.post(
        "/v1/jobs", json={"model_id": model_id, "steps": [{"op": "quantize"}], "device": "cuda"}
    )

    assert response.status_code == 422
    assert response.json()["code"] == "spec_invalid"
    assert response.json()["pointer"] == "/device"


def test_a_worker_without_a_gpu_fails_a_cuda_job_with_the_reason(
    client: Any, mlp_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("MODELPRESS_CUDA_ENABLED", "true")
    get_settings.cache_clear()
    model_id = _ready_model(client, mlp_onnx)

    job = client.post(
        "/v1/jobs", json={"model_id": model_id, "steps": [{"op": "quantize"}], "device": "cuda"}
    ).json()
    work_once(get_settings(), threading.Event())

    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "failed"
    assert done["error"]["code"] == "device_unavailable"
