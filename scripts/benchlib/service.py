"""The service under test: start it in embedded mode, time API reads, watch upload memory."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchlib import ROOT


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(
    data_dir: Path,
    settings: dict[str, str] | None = None,
    log: Path | None = None,
    timeout_s: float = 600,
) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """`modelpress run` (API + embedded worker) on a free port, and a client once it answers.
    `settings`: MODELPRESS_* variables for this service; `log`: where its output goes."""
    port = free_port()
    # The bench's own settings only: an operator's MODELPRESS_* must not leak into the numbers.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPRESS_")}
    env.update(PORT=str(port), MODELPRESS_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    env.update(settings or {})
    with log.open("ab") if log is not None else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s)
    for _ in range(240):
        try:
            if client.get("/healthz").status_code == 200:
                return proc, client
        except httpx.TransportError:
            time.sleep(0.25)
    stop_service(proc)
    raise RuntimeError(f"the service did not start{'' if log is None else f': see {log}'}")


def run_record(command: str, started: float, load_before: float, **more: Any) -> dict[str, Any]:
    """A measurement's `run`: the command, today's date, how busy the machine was as it began
    (other work distorts every latency), its wall time since `started` (perf_counter)."""
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "load_average_1min_before": load_before,
        "wall_s": round(time.perf_counter() - started, 1),
        **more,
    }


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """Stop the service and its embedded worker (one process group)."""
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def api_reads(client: httpx.Client, job_id: str, n: int = 500) -> dict[str, Any]:
    """Latency of `n` sequential reads, one job and one list page alternating."""
    paths = ["/v1/jobs/{id}", "/v1/jobs?limit=20"]
    times = []
    for i in range(n):
        path = paths[i % 2].replace("{id}", job_id)
        t = time.perf_counter()
        assert client.get(path).status_code == 200
        times.append((time.perf_counter() - t) * 1000)
    p50, p99 = (float(np.percentile(times, q)) for q in (50, 99))
    return {"p50": p50, "p99": p99, "n": n, "paths": paths}


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc, in kB (0 when absent)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def upload_memory(client: httpx.Client, pid: int, tmp: Path, mb: int = 512) -> dict[str, float]:
    """Stream a large (refused: unknown bytes, 415) upload and watch the API's resident memory."""
    big = tmp / "big.bin"
    with big.open("wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1024 * 1024))
    before = rss_kb(pid)
    with big.open("rb") as fh:
        status = client.post("/v1/models", files={"file": ("big.bin", fh)}).status_code
    big.unlink()
    return {
        "upload_mb": mb,
        "status": status,
        "rss_before_mb": before / 1024,
        "peak_mb": rss_kb(pid, "VmHWM") / 1024,
    }
