"""Worker throughput: jobs/hour with 1 and 2 worker processes on this machine
(`scripts/bench.py --throughput`, saved in docs/bench/throughput.json).

The production layout on one host: `modelpress api` and `modelpress worker --concurrency N`
(N Celery pool processes, one job each at a time) on Postgres and Redis. The same batch of jobs is
submitted at once and timed until every one of them has succeeded (none is cancelled): a small
job (the 4 x 512 MLP of the overhead bench, dynamic int8, 20 iterations) and, fewer of them, the
44 MB transformer encoder. Each job's child runs with all cores (`MODELPRESS_SANDBOX_THREADS=0`),
so two processes share the machine's two cores: what N buys here is the overlap of one job's
single-threaded parts (start, quantization, memory probes) with another's timing runs.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchlib import ROOT, overhead, transformer
from benchlib.load import (
    DEFAULT_PG,
    DEFAULT_REDIS,
    _env,
    _postgres_ready,
    _redis_ready,
    _spawn,
    _stop,
    _wait_healthy,
)
from benchlib.service import free_port

THROUGHPUT_JSON = ROOT / "docs" / "bench" / "throughput.json"
BATCHES = {"small": 24, "large": 6}
WAIT_S = 1800.0


def _run(tmp: Path, workers: int, models: dict[str, Path]) -> dict[str, Any]:
    port, log = free_port(), tmp / f"throughput-{workers}.log"
    env = _env(
        {
            "MODELPRESS_DATA_DIR": str(tmp / f"data-{workers}"),
            "MODELPRESS_DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
            "MODELPRESS_BROKER_URL": os.environ.get("BENCH_BROKER_URL", DEFAULT_REDIS),
            "MODELPRESS_SANDBOX_THREADS": "0",
        }
    )
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=ROOT, check=True)
    procs = [
        _spawn(["api", "--host", "127.0.0.1", "--port", str(port)], env, log),
        _spawn(["worker", "--concurrency", str(workers)], env, log),
    ]
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    try:
        _wait_healthy(base, procs, log)
        with httpx.Client(base_url=base, timeout=600) as client:
            for name, path in models.items():
                with path.open("rb") as fh:
                    model = client.post(
                        "/v1/models?wait=true", files={"file": (path.name, fh)}
                    ).json()
                shapes = overhead.MODELS[name]["shapes"]
                spec = overhead._spec(model["id"], shapes, lean=False)
                result[name] = _batch(client, spec, BATCHES[name])
    finally:
        for proc in procs:
            _stop(proc)
    return result


def _batch(client: httpx.Client, spec: dict[str, Any], n: int) -> dict[str, Any]:
    started = time.perf_counter()
    ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(n)]
    statuses: dict[str, str] = {}
    deadline = started + WAIT_S
    while time.perf_counter() < deadline:
        statuses = {i: client.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
        if all(s in ("succeeded", "failed", "cancelled") for s in statuses.values()):
            break
        time.sleep(0.5)
    wall = time.perf_counter() - started
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    done = counts.get("succeeded", 0)
    return {
        "jobs": n,
        "succeeded": done,
        "statuses": counts,
        "wall_s": round(wall, 1),
        "jobs_per_hour": round(done / wall * 3600, 0),
    }


def measure(command: str) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {
        "run": {
            "command": command,
            "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
            "load_average_1min_before": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(),
        },
        "batches": BATCHES,
        "workers": {},
    }
    why = _postgres_ready(os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG)) or _redis_ready(
        os.environ.get("BENCH_BROKER_URL", DEFAULT_REDIS)
    )
    if why:
        record["skipped"] = why
        return record
    with tempfile.TemporaryDirectory(prefix="modelpress-bench-throughput-") as tmp:
        models = {
            "small": overhead.build_mlp(Path(tmp) / "small.onnx"),
            "large": transformer.build_transformer(Path(tmp) / "large.onnx"),
        }
        for workers in (1, 2):
            print(f"throughput: {workers} worker process(es) ...", flush=True)
            record["workers"][str(workers)] = _run(Path(tmp), workers, models)
    record["run"]["wall_s"] = round(time.perf_counter() - started, 1)
    return record


def render(data: dict[str, Any] | None) -> str:
    title = "## Worker throughput: jobs/hour with 1 and 2 worker processes"
    if data is None:
        return f"{title}\n\nNot measured yet: `python scripts/bench.py --throughput`.\n"
    run = data["run"]
    if data.get("skipped"):
        return f"{title}\n\nNot measured: {data['skipped']}.\n"
    lines = [
        title,
        "",
        f"Measured by `{run['command']}` on {run['date']} in {run['wall_s'] / 60:.0f} min "
        f"({run['cores']} cores, 1-minute load average {run['load_average_1min_before']:.2f} as "
        "it started): `modelpress api` and `modelpress worker --concurrency N` on Postgres and "
        "Redis, one batch of jobs submitted at once and timed until every one has ended "
        "(`scripts/benchlib/throughput.py`). Each job is dynamic int8 with the default "
        "measurements (noise control, memory probes), 20 iterations at batch 1 and 32; each "
        "job's child may use all cores.",
        "",
        "| model | worker processes | jobs | succeeded | wall (s) | jobs/hour |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for workers, per_model in data["workers"].items():
        for name, row in per_model.items():
            lines.append(
                f"| {overhead.MODELS[name]['describe']} | {workers} | {row['jobs']} "
                f"| {row['succeeded']} | {row['wall_s']:.1f} | {row['jobs_per_hour']:.0f} |"
            )
    one, two = data["workers"].get("1", {}), data["workers"].get("2", {})
    ratios = [
        f"{name} {two[name]['jobs_per_hour'] / one[name]['jobs_per_hour']:.2f}x"
        for name in one
        if name in two and one[name]["jobs_per_hour"]
    ]
    if ratios:
        lines += [
            "",
            f"Two worker processes vs one: {', '.join(ratios)} the jobs/hour. Scale further with "
            'more worker hosts (README, "Running N worker hosts"): on one host the processes '
            "share its cores, and every job's timing runs want all of them.",
        ]
    return "\n".join(lines) + "\n"
