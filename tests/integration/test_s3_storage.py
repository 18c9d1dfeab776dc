"""`modelpress run` with MODELPRESS_STORAGE_URL=s3://bucket/prefix on a real S3 server (moto).

Upload, inspection, a quantization job and the downloads all go through object storage: the
blobs are objects in the bucket, and the local data directory holds only scratch and SQLite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s3server

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_server(tmp_path: Path, spawn: Callable, helpers: Any) -> Iterator[Any]:
    with s3server.moto_server(tmp_path / "moto.log") as endpoint:
        bucket = s3server.new_bucket(endpoint)
        port, data = helpers.free_port(), tmp_path / "data"
        env = helpers.process_env(
            {
                "PORT": str(port),
                "MODELPRESS_DATA_DIR": str(data),
                "MODELPRESS_STORAGE_URL": f"s3://{bucket}/deploy/one",
                "MODELPRESS_S3_ENDPOINT_URL": endpoint,
                **s3server.CREDENTIALS,
            }
        )
        proc = spawn(["run"], env, "run-s3")
        client = helpers.api_client(port)
        client.proc, client.data, client.bucket = proc, data, bucket
        client.s3 = s3server.client(endpoint)
        yield client
        client.close()


def _objects(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_models_and_artifacts_live_in_the_bucket(
    s3_server: Any, mlp_onnx: Path, helpers: Any, tmp_path: Path
) -> None:
    with mlp_onnx.open("rb") as fh:
        model = s3_server.post("/v1/models?wait=true", files={"file": ("mlp.onnx", fh)}).json()
    assert model["status"] == "ready", s3_server.proc.tail()
    spec = {"model_id": model["id"], "steps": [{"op": "quantize"}]}
    spec["benchmark"] = {"batch_sizes": [1], "iterations": 3}

    job = s3_server.post("/v1/jobs", json=spec).json()
    done = helpers.wait_job(s3_server, job["id"])

    assert done["status"] == "succeeded", (done, s3_server.proc.tail())
    response = s3_server.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")
    assert response.status_code == 200
    sha = hashlib.sha256(response.content).hexdigest()
    assert response.headers["etag"] == f'"{sha}"'
    assert response.headers["content-length"] == str(len(response.content))
    assert "attachment" in response.headers["content-disposition"]
    downloaded = tmp_path / "model.onnx"
    downloaded.write_bytes(response.content)
    feeds = {"input": np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)}
    original, quantized = helpers.outputs(mlp_onnx, feeds), helpers.outputs(downloaded, feeds)
    assert helpers.cosine(original[0], quantized[0]) > 0.99
    assert s3_server.get(f"/v1/models/{model['id']}/file").content == mlp_onnx.read_bytes()
    assert s3_server.get(f"/v1/jobs/{job['id']}/report").json()["optimized"]["size_bytes"] == (
        len(response.content)
    )
    stored = _objects(s3_server.s3, s3_server.bucket)
    expected = {f"deploy/one/sha256/{h[:2]}/{h[2:4]}/{h}" for h in (model["sha256"], sha)}
    assert expected <= stored
    assert all(key.startswith("deploy/one/sha256/") for key in stored)
    local = {
        p.relative_to(s3_server.data).parts[0] for p in s3_server.data.rglob("*") if p.is_file()
    }
    assert local <= {"scratch", "modelpress.db", "modelpress.db-wal", "modelpress.db-shm"}
    assert not (s3_server.data / "storage").exists()
