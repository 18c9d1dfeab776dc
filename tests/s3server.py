"""A real S3-compatible server for tests: moto's server mode (`moto_server`) on a free port.

It runs as its own process (every test process, API and worker alike, talks to it over HTTP,
as to MinIO or AWS), with throwaway credentials in the environment of whoever calls it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "modelpress-test",
    "AWS_SECRET_ACCESS_KEY": "modelpress-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """Start `moto_server` on a free loopback port; yields its endpoint URL."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (the dev extra)")
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
        "moto_server"
    )
    argv = [exe] if exe else [sys.executable, "-m", "moto.server"]
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


def new_bucket(endpoint: str) -> str:
    """A fresh bucket on the server (names never repeat across tests)."""
    import boto3

    name = f"mp-{uuid.uuid4().hex[:20]}"
    boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=name)
    return name


def client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }
