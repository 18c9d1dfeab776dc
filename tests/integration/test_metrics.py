"""`/metrics` from real processes: a job finished by the embedded worker (another process than
the API) is counted once and stays counted after its deletion; `modelpress api` with
MODELPRESS_API_WORKERS=2 serves the request counts of both its processes on every scrape."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prom import families, scrape, value

pytestmark = pytest.mark.integration

HTTP = "modelpress_http_request_duration_seconds"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def test_a_job_run_by_the_worker_process_is_counted_once(
    server: Any, mlp_onnx: Path, helpers: Any
) -> None:
    model = server.post("/v1/models?wait=true", files={"file": ("mlp.onnx", mlp_onnx.read_bytes())})
    spec = {
        "model_id": model.json()["id"],
        "steps": [{"op": "quantize", "mode": "dynamic"}],
        "benchmark": {"batch_sizes": [1], "iterations": 3},
    }
    job = server.post("/v1/jobs", json=spec).json()
    done = helpers.wait_job(server, job["id"])

    scraped = scrape(server)
    deleted = server.delete(f"/v1/jobs/{job['id']}")
    after = scrape(server)

    assert done["status"] == "succeeded", (done, server.proc.tail())
    key = {"op": "quantize", "status": "succeeded"}
    assert value(scraped, "modelpress_jobs", "modelpress_jobs_total", **key) == 1
    assert deleted.status_code == 204
    assert value(after, "modelpress_jobs", "modelpress_jobs_total", **key) == 1
    for family in ("modelpress_job_duration_seconds", "modelpress_job_queue_wait_seconds"):
        assert value(after, family, f"{family}_count", op="quantize") == 1
    steps = "modelpress_step_duration_seconds"
    assert value(after, steps, f"{steps}_count", op="quantize") >= 1


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    for task in tasks.iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _multiproc_dir(parent: int) -> Path:
    """The directory the API processes got (a fresh one: the test does not set it)."""
    for child in _children(parent):
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(f"{MULTIPROC_ENV}=".encode()):
                return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("no API process has PROMETHEUS_MULTIPROC_DIR")


def _served_by(directory: Path) -> dict[str, float]:
    """/healthz requests per process, from each process's own file."""
    from prometheus_client.mmap_dict import MmapedDict

    served = {}
    for path in directory.glob("histogram_*.db"):
        rows = MmapedDict.read_all_values_from_file(str(path))
        served[path.stem] = sum(
            v for key, v, *_ in rows if "_bucket" in key and '"route": "/healthz"' in key
        )
    return served


def test_two_api_processes_report_every_request_whichever_answers(
    spawn: Any, helpers: Any, tmp_path: Path
) -> None:
    port = helpers.free_port()
    env = helpers.process_env(
        {
            "MODELPRESS_DATA_DIR": str(tmp_path / "data"),
            "MODELPRESS_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
            "MODELPRESS_API_WORKERS": "2",
        }
    )
    env.pop(MULTIPROC_ENV, None)
    proc = spawn(["api", "--host", "127.0.0.1", "--port", str(port)], env, "api")
    url = f"http://127.0.0.1:{port}"

    def both_up() -> bool:
        try:
            return (
                httpx.get(f"{url}/healthz").status_code == 200
                and len(list(_multiproc_dir(proc.popen.pid).glob("counter_*.db"))) >= 2
            )
        except (httpx.TransportError, AssertionError, OSError):
            return False

    helpers.wait_for(both_up, 60, "two API processes")
    time.sleep(0.5)
    before = value(
        families(httpx.get(f"{url}/metrics").text),
        HTTP,
        f"{HTTP}_count",
        route="/healthz",
        status="200",
    )
    requests = 40
    for _ in range(requests):  # a new connection each: either process may accept it
        assert httpx.get(f"{url}/healthz", headers={"Connection": "close"}).status_code == 200

    counts = [
        value(
            families(httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text),
            HTTP,
            f"{HTTP}_count",
            route="/healthz",
            status="200",
        )
        for _ in range(6)
    ]
    directory = _multiproc_dir(proc.popen.pid)
    served = _served_by(directory)
    code = proc.stop(signal.SIGTERM)

    assert counts == [before + requests] * 6, proc.tail()
    assert sum(served.values()) == before + requests
    assert len([n for n in served.values() if n > 0]) == 2, served  # both answered some
    assert code == 0, proc.tail()
    assert not directory.exists()  # the fresh directory goes with the server
