"""`modelpress run` / `modelpress api` on a non-loopback address: refused with auth off unless
MODELPRESS_ALLOW_INSECURE_BIND=true, refused with auth on and the built-in pepper. Real
processes: the refusal is an exit status and a message, the override a server that answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import is_service_setting

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
    env.update({f"MODELPRESS_{k.upper()}": v for k, v in settings.items()})
    env.update({"MODELPRESS_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


@pytest.mark.parametrize("command", ["api", "run"])
def test_auth_off_on_a_public_address_refuses_to_start(tmp_path: Path, command: str) -> None:
    argv = _cli(command, "--host", "0.0.0.0", "--port", str(_free_port()))

    done = subprocess.run(argv, env=_env(tmp_path), capture_output=True, text=True, timeout=120)

    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "MODELPRESS_ALLOW_INSECURE_BIND=true" in done.stderr
    assert not (tmp_path / "data" / "modelpress.db").exists()  # refused before migrating


def test_auth_on_with_the_dev_pepper_refuses_to_start(tmp_path: Path) -> None:
    argv = _cli("api", "--host", "0.0.0.0", "--port", str(_free_port()))
    env = _env(tmp_path, auth_required="true")

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode != 0
    assert "MODELPRESS_API_KEY_PEPPER" in done.stderr


def _serves(argv: list[str], env: dict[str, str], port: int) -> int:
    """Start the command, wait for /healthz on the port, stop it; the status /healthz gave."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the API never answered")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_override_starts_with_auth_off(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, allow_insecure_bind="true")

    status = _serves(_cli("api", "--host", "0.0.0.0", "--port", str(port)), env, port)

    assert status == 200


def test_auth_on_with_a_secret_pepper_starts(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, auth_required="true", api_key_pepper="a-real-secret-" * 3)

    status = _serves(_cli("api", "--host", "0.0.0.0", "--port", str(port)), env, port)

    assert status == 200
