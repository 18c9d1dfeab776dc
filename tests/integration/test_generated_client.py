"""A client generated from the live `/openapi.json` by openapi-python-client builds and works.

What a pipeline that does not want our own client does: dump the schema of a running
`modelpress run`, generate a package from it (the generator must not skip or warn about any
part of the schema), import it, and upload an ONNX model, submit a quantization job, follow it
to the end and read its results, all through the generated, typed functions.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.integration

PACKAGE = "modelpress_api_client"
# Stable names whatever the API's title; the generator's ruff hooks format what it writes.
CONFIG = f"project_name_override: modelpress-api-client\npackage_name_override: {PACKAGE}\n"


def _generate(document: str, where: Path) -> Path:
    (where / "openapi.json").write_text(document)
    (where / "config.yaml").write_text(CONFIG)
    bin_dir = str(Path(sys.executable).parent)  # the generator's post hooks run `ruff`
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    argv = [sys.executable, "-m", "openapi_python_client", "generate"]
    argv += ["--path", "openapi.json", "--config", "config.yaml", "--output-path", "client"]
    done = subprocess.run(argv, cwd=where, env=env, capture_output=True, text=True, timeout=120)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "warning" not in output.lower(), output  # nothing of the schema was skipped
    return where / "client"


@pytest.fixture
def generated(server: Any, tmp_path: Path) -> Iterator[ModuleType]:
    """The generated package, importable for one test (then forgotten again)."""
    document = server.get("/openapi.json").text
    project = _generate(document, tmp_path)
    sys.path.insert(0, str(project))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(project))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_a_generated_client_uploads_submits_and_reads_a_job(
    generated: ModuleType, server: Any, mlp_onnx: Path, helpers: Any
) -> None:
    from modelpress_api_client import Client
    from modelpress_api_client.api.artifacts import download_artifact, get_report
    from modelpress_api_client.api.jobs import get_job, submit_job
    from modelpress_api_client.api.models import upload_model
    from modelpress_api_client.models import (
        BenchmarkSpec,
        JobCreate,
        JobStatus,
        ProblemDetail,
        QuantizeConfig,
        QuantizeConfigMode,
        UploadModelBody,
    )
    from modelpress_api_client.types import File

    client = Client(base_url=str(server.base_url), timeout=server.timeout)
    with mlp_onnx.open("rb") as fh:
        body = UploadModelBody(file=File(payload=fh, file_name="mlp.onnx"), name="mlp")
        model = upload_model.sync(client=client, body=body, wait=True)
    spec = JobCreate(
        model_id=model.id,
        steps=[QuantizeConfig(op="quantize", mode=QuantizeConfigMode.DYNAMIC)],
        benchmark=BenchmarkSpec(
            batch_sizes=[1], iterations=5, warmup=1, noise_control=False, memory=False
        ),
    )

    submitted = submit_job.sync_detailed(client=client, body=spec, idempotency_key="gen-1")
    job_id = submitted.parsed.id
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}

    def finished() -> Any:
        job = get_job.sync(client=client, job_id=job_id)
        return job if job.status in terminal else None

    done = helpers.wait_for(finished, 240, f"job {job_id}")

    assert model.status == "ready", server.proc.tail()
    assert submitted.status_code == 202
    assert submitted.headers["location"] == f"/v1/jobs/{job_id}"
    assert done.status == JobStatus.SUCCEEDED, (done.to_dict(), server.proc.tail())
    [artifact] = [a for a in done.artifacts if a.kind == "model"]
    downloaded = download_artifact.sync(client=client, job_id=job_id, name=artifact.name)
    assert hashlib.sha256(downloaded.payload.read()).hexdigest() == artifact.sha256
    report = get_report.sync(client=client, job_id=job_id)
    assert report.optimized.size_bytes == artifact.size_bytes
    assert report.steps[0].op == "quantize"
    missing = get_job.sync_detailed(client=client, job_id="no-such-job")
    assert missing.status_code == 404
    assert isinstance(missing.parsed, ProblemDetail) and missing.parsed.code == "not_found"
