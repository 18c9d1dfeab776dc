"""The API processes' own metrics in prometheus-client's multiprocess mode: values written by
separate processes, read back together by whichever process answers the scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prom import families, value

from app.core import metrics as names

ROOT = Path(__file__).resolve().parents[2]
WRITE = (
    "from app.core.metrics import count_upload, observe_request\n"
    "observe_request('/v1/jobs/{job_id}', 200, 0.2)\n"
    "count_upload('/v1/datasets', 1000)\n"
)
READ = (
    "from prometheus_client import CollectorRegistry, generate_latest\n"
    "from app.core.metrics import process_collector\n"
    "registry = CollectorRegistry()\n"
    "registry.register(process_collector())\n"
    "print(generate_latest(registry).decode())\n"
)


def _python(code: str, multiproc_dir: Path) -> str:
    env = {**os.environ, names.MULTIPROC_ENV: str(multiproc_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_scrape_sums_every_process_of_the_shared_directory(tmp_path: Path) -> None:
    for _ in range(3):
        _python(WRITE, tmp_path)

    scraped = families(_python(READ, tmp_path))

    count = f"{names.HTTP_DURATION}_count"
    labels = {"route": "/v1/jobs/{job_id}", "status": "200"}
    assert value(scraped, names.HTTP_DURATION, count, **labels) == 3
    uploads = "modelpress_upload_bytes"
    assert value(scraped, uploads, f"{uploads}_total", kind="dataset") == 3000
    assert value(scraped, uploads, f"{uploads}_total", kind="model") == 0
    assert scraped[names.HTTP_DURATION].type == "histogram"
    assert scraped[uploads].type == "counter"
