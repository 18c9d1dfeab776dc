"""Large ONNX models end to end, with external data forced on a tiny model
(`MODELPRESS_EXTERNAL_DATA_THRESHOLD_BYTES=0`): upload a zip of the `.onnx` and its data file
through the API, inspect it and run `quantize` and `optimize` jobs in real sandbox children
(`execute_inspection` / `execute_job`, as the embedded worker runs them), download the artifact
archive, unzip it and compare what ONNX Runtime computes with the original."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.core.config import get_settings
from worker import onnx_io
from worker.execute import execute_inspection, execute_job

pytestmark = pytest.mark.integration
FEEDS = {"input": np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)}
QUICK = {"batch_sizes": [1, 4], "iterations": 3, "noise_control": False, "memory": False}


@pytest.fixture
def forced(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ONNX result keeps its tensors in external data, however small."""
    monkeypatch.setenv("MODELPRESS_EXTERNAL_DATA_THRESHOLD_BYTES", "0")
    get_settings.cache_clear()


def _archive(mlp_onnx: Path, tmp_path: Path) -> bytes:
    folder = tmp_path / "bundle"
    folder.mkdir()
    onnx.save_model(
        onnx.load(str(mlp_onnx)),
        str(folder / "mlp.onnx"),
        save_as_external_data=True,
        location="mlp.weights",
        size_threshold=0,
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("mlp.onnx", "mlp.weights"):
            zf.write(folder / name, f"mlp/{name}")
    return buf.getvalue()


def _outputs(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, FEEDS)[0])


def _unzipped(data: bytes, dest: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        zf.extractall(dest)
    assert sorted(names) == ["model.onnx", "model.onnx.data"]
    return dest / "model.onnx"


def _run(client: Any, model_id: str, step: dict[str, Any], key: str) -> dict[str, Any]:
    spec = {"model_id": model_id, "steps": [step], "benchmark": QUICK}
    job = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": key})
    assert job.status_code == 202, job.text
    assert execute_job(job.json()["id"], get_settings()) == "succeeded", client.get(
        f"/v1/jobs/{job.json()['id']}"
    ).json()
    return dict(client.get(f"/v1/jobs/{job.json()['id']}").json())


@pytest.mark.parametrize(
    ("step", "cosine"),
    [
        ({"op": "quantize"}, 0.98),
        ({"op": "optimize"}, 0.9999),
        ({"op": "prune", "method": "magnitude", "sparsity": 0.3}, 0.8),
    ],
)
def test_an_external_data_archive_round_trips(
    client: Any,
    forced: None,
    mlp_onnx: Path,
    tmp_path: Path,
    step: dict[str, Any],
    cosine: float,
) -> None:
    upload = client.post("/v1/models", files={"file": ("mlp.zip", _archive(mlp_onnx, tmp_path))})
    assert upload.status_code == 201, upload.text
    model_id = upload.json()["id"]
    assert execute_inspection(model_id, get_settings()) == "ready", client.get(
        f"/v1/models/{model_id}"
    ).json()
    model = client.get(f"/v1/models/{model_id}").json()

    job = _run(client, model_id, step, f"archive-{step['op']}")

    names = {a["name"]: a["kind"] for a in job["artifacts"]}
    assert names.get("model.zip") == "model", names
    data = client.get(f"/v1/jobs/{job['id']}/artifacts/model.zip").content
    result = _unzipped(data, tmp_path / "result")
    original, produced = _outputs(mlp_onnx), _outputs(result)
    similarity = float(
        (original.ravel() @ produced.ravel())
        / (np.linalg.norm(original) * np.linalg.norm(produced))
    )
    assert similarity > cosine
    assert model["parameter_count"] > 0 and model["inputs"][0]["name"] == "input"
    manifest = json.loads(client.get(f"/v1/jobs/{job['id']}/artifacts/manifest.json").content)
    assert manifest["model_artifact"] == {
        "archive": True,
        "name": "model.zip",
        "members": ["model.onnx", "model.onnx.data"],
    }
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["optimized"]["size_bytes"] == sum(
        p.stat().st_size for p in result.parent.iterdir()
    )
    assert any("model.zip" in note for note in report["verdict"]["notes"])


@pytest.mark.parametrize("step", [{"op": "quantize"}, {"op": "optimize"}])
def test_an_archive_under_the_threshold_comes_back_as_one_file(
    client: Any, mlp_onnx: Path, tmp_path: Path, step: dict[str, Any]
) -> None:
    """The default threshold: the upload's tensors are in a data file, the result's fit in one
    `.onnx` (ONNX Runtime's optimizer must not write a copy pointing at the input's data file)."""
    upload = client.post("/v1/models", files={"file": ("mlp.zip", _archive(mlp_onnx, tmp_path))})
    model_id = upload.json()["id"]
    assert execute_inspection(model_id, get_settings()) == "ready"

    job = _run(client, model_id, step, f"small-archive-{step['op']}")

    names = {a["name"]: a["kind"] for a in job["artifacts"]}
    assert names.get("model.onnx") == "model", names
    result = tmp_path / "model.onnx"
    result.write_bytes(client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx").content)
    assert not onnx_io.has_external_data(onnx.load(str(result), load_external_data=False))
    original, produced = _outputs(mlp_onnx), _outputs(result)
    assert np.abs(original - produced).max() < 0.1 * np.abs(original).max()


def test_a_bare_onnx_pointing_outside_itself_is_rejected(
    client: Any, forced: None, mlp_onnx: Path, tmp_path: Path
) -> None:
    model = onnx.load(str(mlp_onnx))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../../../etc/hostname")
    onnx.save_model(model, str(tmp_path / "bare.onnx"))  # the reference only, nothing written
    upload = client.post(
        "/v1/models", files={"file": ("bare.onnx", (tmp_path / "bare.onnx").read_bytes())}
    )
    assert upload.status_code == 201, upload.text  # the protobuf needs the sandbox to be read

    status = execute_inspection(upload.json()["id"], get_settings())

    body = client.get(f"/v1/models/{upload.json()['id']}").json()
    assert status == "rejected"
    assert body["error"]["code"] == "external_data_not_supported"
