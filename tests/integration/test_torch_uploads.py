"""PyTorch uploads end to end through the API and the embedded worker (sandbox children):
TorchScript and .pt2 programs are inspected, exported, quantized, and the artifacts match the
originals when loaded independently. The networks are in tests/networks.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from networks import Encoder, Mlp
from support import ML_PATH_ONE_BACKEND

from app.core.config import get_settings
from worker.embedded import work_once

pytestmark = [pytest.mark.integration, ML_PATH_ONE_BACKEND]


def _save_pt2(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    name = "x" if example.dtype.is_floating_point else "input_ids"
    dims = {0: torch.export.Dim("batch", max=1024)}
    if not example.dtype.is_floating_point:
        dims[1] = torch.export.Dim("sequence", max=512)
    torch.export.save(torch.export.export(module, (example,), dynamic_shapes={name: dims}), path)
    return path


def _drain(job_or_model: str, client: Any, kind: str) -> dict[str, Any]:
    """Run the embedded worker in this thread until the object is finished."""
    import threading

    stop = threading.Event()
    for _ in range(20):
        body = client.get(f"/v1/{kind}/{job_or_model}").json()
        if body["status"] not in ("queued", "running", "validating"):
            return body
        work_once(get_settings(), stop)
    raise AssertionError(f"{kind} {job_or_model} did not finish: {body}")


def _upload(client: Any, path: Path, shapes: str | None = None) -> dict[str, Any]:
    data = {"input_shapes": shapes} if shapes else {}
    with path.open("rb") as fh:
        model = client.post("/v1/models", files={"file": (path.name, fh)}, data=data).json()
    return _drain(model["id"], client, "models")


def _job(client: Any, model_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    spec = {
        "model_id": model_id,
        "steps": steps,
        "benchmark": {"batch_sizes": [1, 4], "iterations": 5},
    }
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 202, job.text
    return _drain(job.json()["id"], client, "jobs")


def _download(client: Any, job: dict[str, Any], tmp_path: Path) -> Path:
    model = next(a for a in job["artifacts"] if a["kind"] == "model")
    path = tmp_path / model["name"]
    path.write_bytes(client.get(f"/v1/jobs/{job['id']}/artifacts/{model['name']}").content)
    return path


def _onnx(path: Path, feed: np.ndarray, name: str) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, {name: feed})[0]


def test_pt2_cnn_exports_to_onnx_that_matches(
    client: Any, tmp_path: Path, cnn_module: torch.nn.Module
) -> None:
    model = _upload(client, _save_pt2(cnn_module, torch.randn(2, 3, 16, 16), tmp_path / "cnn.pt2"))

    job = _job(client, model["id"], [{"op": "export", "format": "onnx"}])

    assert model["format"] == "pt2" and model["status"] == "ready"
    assert job["status"] == "succeeded", job["error"]
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    expected = cnn_module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(_onnx(_download(client, job, tmp_path), x, "x"), expected, atol=1e-4)


def test_torchscript_cnn_quantizes_through_an_implicit_export(
    client: Any, tmp_path: Path, cnn_module: torch.nn.Module
) -> None:
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.script(cnn_module), path)
    model = _upload(client, path, "[[1, 3, 16, 16]]")

    job = _job(client, model["id"], [{"op": "quantize"}])

    assert model["format"] == "torchscript" and model["status"] == "ready"
    assert job["status"] == "succeeded", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert [(s["op"], s["implicit"]) for s in report["steps"]] == [
        ("export", True),
        ("quantize", False),
    ]
    assert (
        report["baseline"]["runtime"] == "torch" and report["optimized"]["runtime"] == "onnxruntime"
    )
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    expected = cnn_module(torch.from_numpy(x)).detach().numpy()
    got = _onnx(_download(client, job, tmp_path), x, "x")
    np.testing.assert_allclose(got, expected, atol=0.1)


def test_pt2_cnn_exports_to_torchscript_that_matches(
    client: Any, tmp_path: Path, cnn_module: torch.nn.Module
) -> None:
    model = _upload(client, _save_pt2(cnn_module, torch.randn(2, 3, 16, 16), tmp_path / "cnn.pt2"))

    job = _job(client, model["id"], [{"op": "export", "format": "torchscript"}])

    assert job["status"] == "succeeded", job["error"]
    loaded = torch.jit.load(str(_download(client, job, tmp_path)))
    x = torch.randn(6, 3, 16, 16)
    torch.testing.assert_close(loaded(x), cnn_module(x), atol=1e-4, rtol=1e-4)


def test_pt2_transformer_quantizes_and_stays_faithful(client: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Encoder(vocab=500, classes=3).eval()
    ids = torch.randint(0, 500, (2, 12))
    model = _upload(client, _save_pt2(module, ids, tmp_path / "enc.pt2"))

    job = _job(client, model["id"], [{"op": "quantize"}])

    assert job["status"] == "succeeded", job["error"]
    feed = np.random.default_rng(2).integers(0, 500, (4, 20), dtype=np.int64)
    expected = module(torch.from_numpy(feed)).detach().numpy()
    got = _onnx(_download(client, job, tmp_path), feed, "input_ids")
    cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cos.min() > 0.98


def test_export_from_torchscript_to_pt2_is_refused_at_submit(
    client: Any, tmp_path: Path, cnn_module: torch.nn.Module
) -> None:
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.script(cnn_module), path)
    model = _upload(client, path, "[[1, 3, 16, 16]]")

    response = client.post(
        "/v1/jobs", json={"model_id": model["id"], "steps": [{"op": "export", "format": "pt2"}]}
    )

    assert response.status_code == 422
    assert response.json()["code"] == "spec_invalid"
    assert response.json()["pointer"] == "/steps/0"


@pytest.mark.parametrize("kind", ["pt2", "torchscript"])
def test_mlp_upload_quantizes_and_matches(client: Any, tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    module = Mlp(20, 64, 6).eval()
    if kind == "pt2":
        model = _upload(client, _save_pt2(module, torch.randn(2, 20), tmp_path / "mlp.pt2"))
    else:
        torch.jit.save(torch.jit.script(module), tmp_path / "mlp.pt")
        model = _upload(client, tmp_path / "mlp.pt", "[[1, 20]]")

    job = _job(client, model["id"], [{"op": "quantize"}])

    assert model["format"] == kind and job["status"] == "succeeded", job["error"]
    x = np.random.default_rng(3).standard_normal((8, 20)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(_onnx(_download(client, job, tmp_path), x, "x"), expected, atol=0.05)
