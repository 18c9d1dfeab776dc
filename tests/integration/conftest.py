"""Helpers for tests that start real processes (uvicorn, Celery workers, sandbox children)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from support import is_service_setting

PROJECT_ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 240.0


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `predicate()` is truthy (a liveness bound, not a performance assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_job(client: Any, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body = client.get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(finished, timeout, f"job {job_id}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class Proc:
    """A child process in its own session, stopped (whole group) at teardown."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.fh = log.open("wb")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self.fh.close()
        return int(self.popen.returncode)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def _spawn(args: list[str], env: dict[str, str], name: str) -> Proc:
        proc = Proc([sys.executable, "-m", "app.cli", *args], env, tmp_path / f"{name}.log")
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        proc.stop(signal.SIGKILL)


def process_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
    env.update(extra)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


@pytest.fixture
def helpers() -> Any:
    """The helpers above, as one namespace (test modules cannot import conftest directly)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        wait_for=wait_for,
        wait_job=wait_job,
        free_port=free_port,
        outputs=outputs,
        cosine=cosine,
        process_env=process_env,
    )


@pytest.fixture
def server(tmp_path: Path, spawn: Callable, helpers: Any) -> Any:
    """`modelpress run` (the embedded default) on a free port, with an httpx client on it."""
    port = helpers.free_port()
    env = helpers.process_env({"PORT": str(port), "MODELPRESS_DATA_DIR": str(tmp_path / "data")})
    proc = spawn(["run"], env, "run")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90)

    def healthy() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    helpers.wait_for(healthy, 60, "the API to answer")
    client.proc = proc
    yield client
    client.close()
