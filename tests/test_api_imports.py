"""The API process never imports torch, onnx or onnxruntime (docs/product.md, "Architecture"),
nor any worker code: `app` reaches `worker` only through app.worker_seam, for the worker
commands."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    from fastapi.testclient import TestClient
    from app.main import create_app

    with TestClient(create_app()) as client:
        assert client.get("/v1/models").status_code == 200
        with open(sys.argv[1], "rb") as fh:
            r = client.post("/v1/models", files={"file": ("m.onnx", fh)})
        assert r.status_code == 201, r.text
        spec = {"model_id": r.json()["id"], "steps": [{"op": "quantize"}]}
        r = client.post("/v1/jobs", json=spec)
        assert r.status_code == 422, r.text
        assert client.get("/v1/passes").status_code == 200
        assert client.get("/openapi.json").status_code == 200
    heavy = sorted(m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules)
    print("HEAVY=" + ",".join(heavy))
    worker = sorted(m for m in sys.modules if m.split(".")[0] == "worker" or m == "app.worker_seam")
    print("WORKER=" + ",".join(worker))
    """
)


@pytest.fixture(scope="module")
def api_process(tmp_path_factory: pytest.TempPathFactory, mlp_onnx: Path) -> str:
    """The stdout of one API process that served uploads, a job spec and the catalog."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MODELPRESS_DATA_DIR": str(tmp_path_factory.mktemp("api") / "data"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(mlp_onnx)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_api_process_imports_no_ml_runtime(api_process: str) -> None:
    assert "HEAVY=\n" in api_process


def test_api_process_imports_no_worker_code(api_process: str) -> None:
    assert "WORKER=\n" in api_process
