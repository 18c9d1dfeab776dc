"""`modelpress run` (what `make run` starts): SQLite, local disk, one local worker, no server.

Drives a live uvicorn over HTTP: docs, upload, quantization of a transformer, artifact that
matches the original, report, and a clean stop on SIGTERM.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_embedded_mode_quantizes_a_transformer_end_to_end(
    server: Any, transformer_onnx: Path, helpers: Any, tmp_path: Path
) -> None:
    with transformer_onnx.open("rb") as fh:
        model = server.post("/v1/models?wait=true", files={"file": ("enc.onnx", fh)}).json()
    spec = {
        "model_id": model["id"],
        "steps": [{"op": "quantize"}],
        "benchmark": {
            "batch_sizes": [1, 4],
            "iterations": 5,
            "input_shapes": {"input_ids": [1, 16]},
        },
    }

    job = server.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "e2e-1"}).json()
    done = helpers.wait_job(server, job["id"])

    assert model["status"] == "ready", server.proc.tail()
    assert done["status"] == "succeeded", (done, server.proc.tail())
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(server.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx").content)
    ids = np.random.default_rng(1).integers(0, 1000, (4, 16), dtype=np.int64)
    original = helpers.outputs(transformer_onnx, {"input_ids": ids})[0]
    quantized = helpers.outputs(artifact, {"input_ids": ids})[0]
    assert helpers.cosine(original, quantized) > 0.98
    report = server.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["optimized"]["size_bytes"] == artifact.stat().st_size
    assert report["steps"][0]["metrics"]["nodes_quantized"] > 0
    assert server.get(f"/v1/jobs/{job['id']}/report.html").text.count("<svg") >= 2


def test_embedded_mode_serves_docs_offline(server: Any) -> None:
    page = server.get("/docs").text

    assert "/static/docs/swagger-ui-bundle.js" in page
    assert server.get("/static/docs/swagger-ui-bundle.js").status_code == 200
    assert "http://" not in page and "https://" not in page  # nothing from a CDN


def test_embedded_mode_stops_cleanly_on_sigterm(server: Any, helpers: Any) -> None:
    popen = server.proc.popen

    os.kill(popen.pid, signal.SIGTERM)  # the main process only, as `kill <pid>` would
    code = popen.wait(timeout=40)

    assert code == 0, server.proc.tail()
    helpers.wait_for(lambda: not _group_alive(popen.pid), 30, "the local worker to stop too")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
