"""Scale-out without a shared disk: the API, two Celery workers and the scheduler as separate
processes, each with a data directory of its own, sharing only Postgres, Redis and an S3 server.

One worker is SIGKILLed (its whole process group and its sandbox child) in the middle of a job;
its lease lapses, the scheduler's reaper requeues the job, and the other worker, which stages the
inputs from object storage into its own scratch, finishes it. Waits are bounded, not timed.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import s3server
from sqlalchemy import select

from app.db.orm import Job
from app.db.session import session_scope

pytestmark = pytest.mark.integration
REDIS_DB = 6  # a database of its own, flushed by this test
LEASE_SECONDS = 8  # the heartbeat renews it every 2 s; a dead worker's lapses quickly


@pytest.fixture
def redis_url() -> str:
    base = os.environ.get("TEST_REDIS_URL")
    if not base:
        pytest.skip("TEST_REDIS_URL is not set")
    url = f"{base.split('/')[0]}//{base.split('/')[2]}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def cluster(
    database_url: str, redis_url: str, tmp_path: Path, spawn: Callable, helpers: Any
) -> Iterator[Any]:
    """The deployment of docker-compose.yml, as processes on this machine."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several hosts share Postgres, not a SQLite file")
    with s3server.moto_server(tmp_path / "moto.log") as endpoint:
        bucket = s3server.new_bucket(endpoint)
        shared = {
            "MODELPRESS_DATABASE_URL": database_url,
            "MODELPRESS_BROKER_URL": redis_url,
            "MODELPRESS_STORAGE_URL": f"s3://{bucket}/modelpress",
            "MODELPRESS_S3_ENDPOINT_URL": endpoint,
            "MODELPRESS_AUTO_MIGRATE": "false",
            "MODELPRESS_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            "MODELPRESS_API_WORKERS": "1",
            **s3server.CREDENTIALS,
        }

        def host(name: str, args: list[str], **extra: str) -> Any:
            data = tmp_path / name  # this "host"'s own disk: scratch only
            env = helpers.process_env({**shared, "MODELPRESS_DATA_DIR": str(data), **extra})
            proc = spawn(args, env, name)
            proc.data = data
            return proc

        port = helpers.free_port()
        api = host("api", ["api", "--host", "127.0.0.1", "--port", str(port)])
        workers = [host(f"worker{i}", ["worker", "--concurrency", "1"]) for i in (1, 2)]
        scheduler = host("scheduler", ["scheduler", "--interval", "1"])
        client = helpers.api_client(port, "the API to answer")
        client.api, client.workers, client.scheduler = api, workers, scheduler
        client.database_url = database_url
        yield client
        client.close()


def _running_on(database_url: str, job_id: str) -> tuple[str, int] | None:
    with session_scope(database_url) as session:
        row = session.execute(select(Job.status, Job.worker).where(Job.id == job_id)).one()
    if row.status != "running" or not row.worker:
        return None
    return row.worker, int(row.worker.rsplit(":", 1)[1])


def _descendants(pid: int) -> set[int]:
    """Every live process under `pid` (the sandbox child runs in a session of its own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _runs_on(pid: int, proc: Any) -> bool:
    """Whether `pid` (of a job's `worker`, `host:pid`) is this worker host or a process in it."""
    return pid == proc.popen.pid or pid in _descendants(proc.popen.pid)


def _kill_host(proc: Any) -> None:
    """SIGKILL a worker host: its process group and every process under it, sandbox included."""
    doomed = _descendants(proc.popen.pid)
    os.killpg(proc.popen.pid, signal.SIGKILL)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.popen.wait(30)


def test_a_killed_worker_s_job_is_finished_by_the_other(
    cluster: Any, transformer_onnx: Path, helpers: Any
) -> None:
    with transformer_onnx.open("rb") as fh:
        model = cluster.post("/v1/models?wait=true", files={"file": ("enc.onnx", fh)}).json()
    assert model["status"] == "ready", [w.tail() for w in cluster.workers]
    spec = {
        "model_id": model["id"],
        "steps": [{"op": "quantize"}],
        # a few seconds of benchmark: the first attempt is still running when it is killed
        "benchmark": {
            "batch_sizes": [1, 8],
            "iterations": 60,
            "input_shapes": {"input_ids": [1, 32]},
        },
    }
    job = cluster.post("/v1/jobs", json=spec).json()
    name, pid = helpers.wait_for(
        lambda: _running_on(cluster.database_url, job["id"]), 120, "a worker to claim the job"
    )
    victim = next(w for w in cluster.workers if _runs_on(pid, w))
    survivor = next(w for w in cluster.workers if w is not victim)
    helpers.wait_for(
        lambda: list(victim.data.glob(f"scratch/job-{job['id']}-a1-*/stderr.log")),
        60,
        "the first attempt to start its sandbox child",
    )

    _kill_host(victim)  # mid-job: the worker, its pool and the sandbox child running the steps
    done = helpers.wait_job(cluster, job["id"], timeout=180)

    assert done["status"] == "succeeded", (done, survivor.tail(), cluster.scheduler.tail())
    assert done["attempt"] == 2  # the first attempt died with its worker, the second finished
    with session_scope(cluster.database_url) as session:
        finished_by = session.scalar(select(Job.worker).where(Job.id == job["id"]))
    assert finished_by != name and _runs_on(int(str(finished_by).rsplit(":", 1)[1]), survivor)
    artifact = cluster.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")
    assert artifact.status_code == 200 and len(artifact.content) > 0
    for proc in [cluster.api, *cluster.workers, cluster.scheduler]:  # no host stored a blob
        assert not list(proc.data.rglob("sha256")), proc.data
