"""Every technique through `POST /v1/jobs`, run by the embedded worker in sandbox children.

Each test downloads the job's artifact and measures what the technique did to the upload with the
`assert_*` helpers of tests/support.py (fewer nodes, float16 weights, zeros, QuantizeLinear, a
TorchScript archive, fewer parameters, closer to the teacher than before distillation): a job
whose pass returned its input unchanged fails them, as tests/worker/passes/test_noop_guard.py
shows for each.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import (
    assert_closer_to_teacher,
    assert_fewer_parameters,
    assert_fp16_weights,
    assert_graph_optimized,
    assert_pruned_to,
    assert_quantized,
    assert_sparser,
    assert_torchscript_archive,
)

from app.core.config import get_settings
from app.passes.prune_channel import PruneChannelConfig
from app.passes.prune_magnitude import PruneMagnitudeConfig
from worker.embedded import work_once
from worker.passes.base import PassResult
from worker.passes.prune_channel import PruneChannelPass
from worker.passes.prune_magnitude import PruneMagnitudePass
from worker.pipeline.tools import onnx_context

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


def _artifact(client: Any, report: dict[str, Any], tmp_path: Path) -> Path:
    """The job's model artifact, downloaded."""
    job = client.get(f"/v1/jobs/{report['job_id']}").json()
    model = next(a for a in job["artifacts"] if a["kind"] == "model")
    path = tmp_path / "artifact" / model["name"]
    path.parent.mkdir()
    path.write_bytes(client.get(f"/v1/jobs/{job['id']}/artifacts/{model['name']}").content)
    return path


def _locally(pass_: Any, config: Any, source: Path, work: Path) -> PassResult:
    """What the job's first step gives, run here: the student the job's distill step starts from."""
    work.mkdir()
    return pass_.run(onnx_context(source, work), config)


def test_optimize(client: Any, unfolded_cnn_onnx: Path, tmp_path: Path) -> None:
    report = _job(client, _model(client, unfolded_cnn_onnx), [{"op": "optimize"}])

    artifact = _artifact(client, report, tmp_path)

    assert_graph_optimized(unfolded_cnn_onnx, artifact)
    metrics = report["steps"][0]["metrics"]
    assert metrics["nodes_after"] < metrics["nodes_before"]
    assert "BatchNormalization" not in metrics["op_types_after"]


def test_convert_fp16(client: Any, transformer_onnx: Path, tmp_path: Path) -> None:
    steps = [{"op": "convert", "precision": "fp16"}]

    report = _job(client, _model(client, transformer_onnx), steps)

    # Weights halve; what ONNX Runtime's converter keeps in fp32 by default stays (reported).
    assert_fp16_weights(transformer_onnx, _artifact(client, report, tmp_path))
    assert report["optimized"]["size_bytes"] < 0.7 * report["baseline"]["size_bytes"]
    assert report["steps"][0]["metrics"]["precision"] == "fp16"
    assert report["fidelity"]["outputs"]["output"]["cosine_min"] > 0.999


def test_prune_magnitude(client: Any, cnn_onnx: Path, tmp_path: Path) -> None:
    steps = [{"op": "prune", "method": "magnitude", "sparsity": 0.5}]

    report = _job(client, _model(client, cnn_onnx), steps)

    assert_sparser(cnn_onnx, _artifact(client, report, tmp_path), at_least=0.4)
    assert (
        report["optimized"]["nonzero_parameters"] < 0.6 * report["baseline"]["nonzero_parameters"]
    )
    assert report["steps"][0]["metrics"]


def test_quantize_static_with_calibration(client: Any, cnn_onnx: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    cal = _dataset(client, tmp_path, x=images)
    steps = [{"op": "quantize", "mode": "static", "calibration_dataset_id": cal}]

    report = _job(client, _model(client, cnn_onnx), steps)

    assert_quantized(cnn_onnx, _artifact(client, report, tmp_path))
    assert report["steps"][0]["metrics"]["nodes_quantized"] > 0
    assert "QuantizeLinear" in report["steps"][0]["metrics"]["op_types_after"]


def test_distill_after_magnitude_pruning(client: Any, mlp_onnx: Path, tmp_path: Path) -> None:
    inputs = np.random.default_rng(0).standard_normal((256, 32)).astype(np.float32)
    data = _dataset(client, tmp_path, input=inputs)
    steps = [
        {"op": "prune", "method": "magnitude", "sparsity": 0.7},
        {"op": "distill", "dataset_id": data, "epochs": 3},
    ]
    config = PruneMagnitudeConfig(op="prune", method="magnitude", sparsity=0.7)
    pruned = _locally(PruneMagnitudePass(), config, mlp_onnx, tmp_path / "pruned").output_path

    report = _job(client, _model(client, mlp_onnx), steps)

    assert_closer_to_teacher(pruned, _artifact(client, report, tmp_path), mlp_onnx, inputs)
    metrics = report["steps"][1]["metrics"]
    assert metrics["after"]["agreement"] >= metrics["before"]["agreement"]


def test_export_onnx_to_torchscript(client: Any, cnn_onnx: Path, tmp_path: Path) -> None:
    report = _job(client, _model(client, cnn_onnx), [{"op": "export", "format": "torchscript"}])

    assert_torchscript_archive(cnn_onnx, _artifact(client, report, tmp_path))
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
    config = PruneChannelConfig(op="prune", method="channel", ratio=0.5, round_to=1)
    pruned = _locally(PruneChannelPass(), config, cnn_onnx, tmp_path / "pruned").output_path

    report = _job(client, _model(client, cnn_onnx), steps)

    artifact = _artifact(client, report, tmp_path)
    assert_fewer_parameters(cnn_onnx, artifact)
    assert_closer_to_teacher(pruned, artifact, cnn_onnx, images)
    assert report["optimized"]["parameters"] < report["baseline"]["parameters"]
    assert report["steps"][0]["op"] == "prune.channel"


def test_prune_neuron_on_calibration_data(
    client: Any, dead_neuron_mlp_onnx: Path, tmp_path: Path
) -> None:
    inputs = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    cal = _dataset(client, tmp_path, input=inputs)
    steps = [{"op": "prune", "method": "neuron", "calibration_dataset_id": cal}]

    report = _job(client, _model(client, dead_neuron_mlp_onnx), steps)

    # The 16 dead hidden neurons go: fc1 64 -> 48 rows, fc2 64 -> 48 columns.
    artifact = _artifact(client, report, tmp_path)
    assert_pruned_to(dead_neuron_mlp_onnx, artifact, {0: (48, 32), 1: (10, 48)})
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
