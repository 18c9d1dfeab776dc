"""Fault cases with real processes: a worker killed mid-job (JOB-01/ISO-10), a stop mid-job."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
ARTIFACTS = ["manifest.json", "model.onnx", "report.html", "report.json"]  # once, not twice
SLOW_BENCHMARK = {"batch_sizes": [1], "iterations": 2000, "time_budget_s": 8}


@pytest.fixture
def worker_env(env: dict[str, str], helpers: Any) -> dict[str, str]:
    # Short, so that a killed worker's job is requeued within seconds; not so short that a
    # heartbeat late on a loaded machine (2 cores, a benchmark beside the suite) loses the lease
    # of the worker that took it over, which with 2 attempts fails the job `worker_lost`.
    return helpers.process_env({**env, "MODELPRESS_JOB_LEASE_SECONDS": "8"})


def _submit(
    client: Any, model: Path, helpers: Any, spawn: Callable, worker_env: dict
) -> tuple[str, Any]:
    worker = spawn(["worker", "--embedded"], worker_env, "worker-1")
    return _running_job(client, model, helpers), worker


def _running_job(client: Any, model: Path, helpers: Any) -> str:
    """Upload `model`, submit a slow quantize job, and wait until a worker runs it."""
    with model.open("rb") as fh:
        m = client.post("/v1/models?wait=true", files={"file": ("m.onnx", fh)}).json()
    spec = {"model_id": m["id"], "steps": [{"op": "quantize"}], "benchmark": SLOW_BENCHMARK}
    job = client.post("/v1/jobs", json=spec).json()
    helpers.wait_for(
        lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", 60, "running"
    )
    return str(job["id"])


def test_a_job_whose_worker_is_killed_runs_again_and_succeeds_once(
    client: Any, mlp_onnx: Path, helpers: Any, spawn: Callable, worker_env: dict
) -> None:
    job_id, worker = _submit(client, mlp_onnx, helpers, spawn, worker_env)

    worker.stop(signal.SIGKILL)  # the whole group: worker and its sandbox child
    spawn(["worker", "--embedded"], worker_env, "worker-2")
    done = helpers.wait_job(client, job_id)

    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert sorted(a["name"] for a in done["artifacts"]) == ARTIFACTS


def test_a_sandbox_child_dies_with_its_killed_worker(
    client: Any, mlp_onnx: Path, helpers: Any, spawn: Callable, worker_env: dict
) -> None:
    """ISO-10: the child runs in a session of its own; PDEATHSIG takes it down with the worker."""
    _job_id, worker = _submit(client, mlp_onnx, helpers, spawn, worker_env)
    children = helpers.wait_for(
        lambda: _sandboxes(worker_env, worker.popen.pid), 30, "the sandbox child"
    )

    os.kill(worker.popen.pid, signal.SIGKILL)  # the worker alone, not its group

    helpers.wait_for(lambda: not any(_alive(p) for p in children), 30, "the sandbox child to die")


def test_a_worker_stopped_mid_job_requeues_it(
    client: Any, mlp_onnx: Path, helpers: Any, spawn: Callable, worker_env: dict
) -> None:
    job_id, worker = _submit(client, mlp_onnx, helpers, spawn, worker_env)

    code = worker.stop(signal.SIGTERM)

    assert code == 0, worker.tail()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


def _sandboxes(env: dict[str, str], worker: int) -> list[int]:
    """Pids of the job children of `worker`: a fresh child names its request under this test's
    data directory; one forked by the worker's zygote is the child of a template process
    (worker/sandbox/template.py) that is the worker's own child. The template is not a job's
    child and is left out."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "worker.sandbox" in cmdline and env["MODELPRESS_DATA_DIR"] in cmdline:
            found.append(int(proc.name))
        elif "worker.sandbox.template" in cmdline:
            parent = _parent(int(proc.name))
            if parent is not None and _parent(parent) == worker:
                found.append(int(proc.name))
    return found


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def _children(pid: int, needle: str) -> list[int]:
    """Pids of `pid`'s direct children whose command line contains `needle`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and needle in cmdline and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def test_modelpress_run_restarts_its_killed_worker_and_the_job_runs_once(
    server: Any, mlp_onnx: Path, helpers: Any
) -> None:
    """The embedded default supervises its worker: kill -9 (as the OOM killer would) mid-job,
    and without a restart of the service a new worker starts within seconds and runs the
    interrupted job again, once (lease 60 s: far longer than this takes)."""
    job_id = _running_job(server, mlp_onnx, helpers)
    run_pid = server.proc.popen.pid
    (first,) = _children(run_pid, "worker --embedded")

    os.kill(first, signal.SIGKILL)

    second = helpers.wait_for(
        lambda: [p for p in _children(run_pid, "worker --embedded") if p != first],
        20,
        "a new embedded worker",
    )[0]
    done = helpers.wait_job(server, job_id)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert sorted(a["name"] for a in done["artifacts"]) == ARTIFACTS
    assert server.proc.popen.poll() is None  # the service itself never stopped
    assert server.get("/healthz").status_code == 200
    assert _alive(second)


def test_a_sandbox_child_killed_mid_job_ends_the_job_with_a_reason(
    client: Any, mlp_onnx: Path, helpers: Any, spawn: Callable, worker_env: dict
) -> None:
    """kill -9 of the child alone (as the OOM killer would): the job ends, never `running`."""
    job_id, worker = _submit(client, mlp_onnx, helpers, spawn, worker_env)
    children = helpers.wait_for(
        lambda: _sandboxes(worker_env, worker.popen.pid), 30, "the sandbox child"
    )

    for pid in children:
        os.kill(pid, signal.SIGKILL)

    done = helpers.wait_job(client, job_id)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "resource_exhausted"
    assert worker.popen.poll() is None  # the worker lives on for the next job
