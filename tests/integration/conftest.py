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


def api_client(port: int, what: str = "the API to answer") -> httpx.Client:
    """An httpx client on the service at `port`, once its /healthz answers (within 60 s)."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90)

    def healthy() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 60, what)
    return client


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
        api_client=api_client,
    )


@pytest.fixture
def server(tmp_path: Path, spawn: Callable, helpers: Any) -> Any:
    """`modelpress run` (the embedded default) on a free port, with an httpx client on it."""
    port = helpers.free_port()
    env = helpers.process_env({"PORT": str(port), "MODELPRESS_DATA_DIR": str(tmp_path / "data")})
    proc = spawn(["run"], env, "run")
    client = api_client(port)
    client.proc = proc
    yield client
    client.close()


# ---------------------------------------------------------------- servers of a test's own


class OwnServer:
    """A database or broker server this test started on a free port, to stop and start at
    will (the shared ones on the standard ports are never touched)."""

    def __init__(self, url: str, start: Callable[[], None], stop: Callable[[], None]) -> None:
        self.url, self.start, self.stop = url, start, stop


@pytest.fixture
def own_postgres() -> Iterator[OwnServer]:
    """A Postgres cluster of its own (`initdb` in a temporary directory, as the `postgres` OS
    user: initdb refuses root), trust auth, fsync off."""
    import pwd
    import shutil
    import tempfile

    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("NO POSTGRES SERVER BINARIES (initdb, pg_ctl) ON THIS HOST")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("NO `postgres` OS USER TO RUN A CLUSTER AS")
    base = Path(tempfile.mkdtemp(prefix="modelpress-pg-"))
    os.chown(base, owner.pw_uid, owner.pw_gid)
    data, port = base / "data", free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*as_postgres, "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start() -> None:
        subprocess.run(
            [*as_postgres, "pg_ctl", "-D", str(data), "-o", options, "-w", "-l",
             str(base / "log"), "start"],
            check=True, capture_output=True,
        )  # fmt: skip

    def stop() -> None:
        subprocess.run(
            [*as_postgres, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
        )

    start()
    yield OwnServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", start, stop)
    stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnServer]:
    """A redis-server of its own on a free port, keeping nothing on disk: a restart loses every
    queued message, as a broker crash would."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("NO redis-server ON THIS HOST")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    start()
    yield OwnServer(f"redis://127.0.0.1:{port}/0", start, stop)
    stop()
