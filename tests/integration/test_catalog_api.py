"""Every technique through `POST /v1/jobs`, run by the embedded worker in sandbox children."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.config import get_settings
from worker.embedded import work_once

pytestmark = pytest.mark.integration
BENCH = {"batch_sizes": [2], "iterations": 3, "noise_control": False, "memory": False}


def _drain(client: Any, kind: str, object_id: str) -> dict[str, Any]:
    for _ in range(10):
        body = client.get(f"/v1/{kind}/{object_id}").json()
        if body["status"] not in ("queued", "running", "validating"):
            return body
        work_once(get_settings(), threading.Event())
    raise AssertionError(body)


def _model(client: Any, path: Path) -> str:
    with path.open("rb") as fh:
        model = client.post("/v1/models", files={"file": (path.name, fh)}).json()
    return _drain(client, "models", model["id"])["id"]


def _dataset(client: Any, tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with path.open("rb") as fh:
        return client.post("/v1/datasets", files={"file": ("data.npz", fh)}).json()["id"]


def _job(client: Any, model_id: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/jobs", json={"model_id": model_id, "steps": steps, "benchmark": BENCH, **extra}
    )
    assert response.status_code == 202, response.text
    job = _drain(client, "jobs", response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return client.get(f"/v1/jobs/{job['id']}/report").json()


def test_optimize(client: Any, mlp_onnx: Path) -> None:
    report = _job(client, _model(client, mlp_onnx), [{"op": "optimize"}])

    assert (
        report["steps"][0]["metrics"]["nodes_after"]
        <= report["steps"][0]["metrics"]["nodes_before"]
    )


def test_convert_fp16(client: Any, transformer_onnx: Path) -> None:
    steps = [{"op": "convert", "precision": "fp16"}]

    report = _job(client, _model(client, transformer_onnx), steps)

    # Weights halve; what ONNX Runtime's converter keeps in fp32 by default stays (reported).
    assert report["optimized"]["size_bytes"] < 0.7 * report["baseline"]["size_bytes"]
    assert report["steps"][0]["metrics"]["precision"] == "fp16"
    assert report["fidelity"]["outputs"]["output"]["cosine_min"] > 0.999


def test_prune_magnitude(client: Any, cnn_onnx: Path) -> None:
    steps = [{"op": "prune", "method": "magnitude", "sparsity": 0.5}]

    report = _job(client, _model(client, cnn_onnx), steps)

    assert (
        report["optimized"]["nonzero_parameters"] < 0.6 * report["baseline"]["nonzero_parameters"]
    )
    assert report["steps"][0]["metrics"]


def test_quantize_static_with_calibration(client: Any, cnn_onnx: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    cal = _dataset(client, tmp_path, x=images)
    steps = [{"op": "quantize", "mode": "static", "calibration_dataset_id": cal}]

    report = _job(client, _model(client, cnn_onnx), steps)

    assert report["steps"][0]["metrics"]["nodes_quantized"] > 0
    assert "QuantizeLinear" in report["steps"][0]["metrics"]["op_types_after"]


def test_distill_after_magnitude_pruning(client: Any, mlp_onnx: Path, tmp_path: Path) -> None:
    inputs = np.random.default_rng(0).standard_normal((256, 32)).astype(np.float32)
    data = _dataset(client, tmp_path, input=inputs)
    steps = [
        {"op": "prune", "method": "magnitude", "sparsity": 0.7},
        {"op": "distill", "dataset_id": data, "epochs": 3},
    ]

    report = _job(client, _model(client, mlp_onnx), steps)

    metrics = report["steps"][1]["metrics"]
    assert metrics["after"]["agreement"] >= metrics["before"]["agreement"]


def test_export_onnx_to_torchscript(client: Any, cnn_onnx: Path) -> None:
    report = _job(client, _model(client, cnn_onnx), [{"op": "export", "format": "torchscript"}])

    assert report["optimized"]["format"] == "torchscript"
    assert report["optimized"]["runtime"] == "torch"
    assert report["fidelity"]["outputs"]["output"]["max_abs_error"] < 1e-4


def test_prune_channel_then_distill(client: Any, cnn_onnx: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(0).standard_normal((128, 3, 16, 16)).astype(np.float32)
    data = _dataset(client, tmp_path, x=images)
    steps = [
        {"op": "prune", "method": "channel", "ratio": 0.5, "round_to": 1},
        {"op": "distill", "dataset_id": data, "epochs": 2},
    ]

    report = _job(client, _model(client, cnn_onnx), steps)

    assert report["optimized"]["parameters"] < report["baseline"]["parameters"]
    assert report["steps"][0]["op"] == "prune.channel"


def test_prune_neuron_on_calibration_data(client: Any, mlp_onnx: Path, tmp_path: Path) -> None:
    inputs = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    cal = _dataset(client, tmp_path, input=inputs)
    steps = [{"op": "prune", "method": "neuron", "calibration_dataset_id": cal}]

    report = _job(client, _model(client, mlp_onnx), steps)

    assert report["steps"][0]["op"] == "prune.neuron"
    assert report["fidelity"]["outputs"]["output"]["max_abs_error"] < 1e-4


def test_export_to_tvm_compiles_a_library_that_matches(
    client: Any, cnn_onnx: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tvm", reason="the optional `tvm` extra (apache-tvm) is not installed")

    report = _job(client, _model(client, cnn_onnx), [{"op": "export", "format": "tvm"}])

    assert report["optimized"]["format"] == "tvm"
    assert report["optimized"]["runtime"] == "tvm"
    assert report["fidelity"]["outputs"]["output"]["max_abs_error"] < 1e-4
    assert report["steps"][0]["metrics"]["validation"]["batch_sizes"] == [1, 3]
