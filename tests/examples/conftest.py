"""The service the examples run against, started as `make run` starts it, and a tiny model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import is_service_setting

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make run`'s command (`PORT=... .venv/bin/modelpress run`, the embedded default: SQLite
    and a local worker under MODELPRESS_DATA_DIR) on a free port; yields its URL."""
    data = tmp_path_factory.mktemp("make-run")
    command = Path(sys.executable).parent / "modelpress"
    assert command.exists(), f"{command}: the venv's `modelpress` script (pip install -e .)"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
    env.update(PORT=str(port), MODELPRESS_DATA_DIR=str(data / "data"))
    log = (data / "run.log").open("wb")
    proc = subprocess.Popen(
        [str(command), "run"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail(f"`modelpress run` did not come up:\n{(data / 'run.log').read_text()}")
        time.sleep(0.25)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 -> 64 -> 10 MLP as ONNX with a dynamic batch axis (16 KB)."""
    import torch
    from networks import Mlp, export_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "mlp.onnx"
    return export_onnx(Mlp(32, 64, 10).eval(), torch.randn(2, 32), path)
