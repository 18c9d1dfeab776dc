"""A full disk mid-upload (RELIABILITY.md UP-11): 507 `insufficient_storage`, nothing of the
upload left in scratch, and the API goes on serving (the next small upload is stored).

The storage root is a real 2 MiB tmpfs, so the ENOSPC comes from the kernel, not from a mock
(tests/core/test_uploads.py has the mocked one). Mounting needs root (CAP_SYS_ADMIN): where it
is not permitted the tests skip and say why.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.core.config import get_settings
from app.main import create_app

SIZE = "2m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "small-disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {SIZE} tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def full_client(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, small_disk: Path
) -> Iterator[Any]:
    monkeypatch.setenv("MODELPRESS_STORAGE_URL", str(small_disk))
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        yield test_client


def _scratch(root: Path) -> list[str]:
    scratch = root / "scratch"
    return sorted(p.name for p in scratch.rglob("*")) if scratch.exists() else []


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, input=np.zeros((4, 32), dtype=np.float32))
    return buf.getvalue()


@pytest.mark.parametrize("route", ["/v1/models", "/v1/datasets"])
def test_an_upload_that_fills_the_disk_is_507_and_leaves_nothing(
    full_client: Any, small_disk: Path, route: str
) -> None:
    response = full_client.post(route, files={"file": ("big.bin", b"\x07" * 3_000_000)})

    assert_problem(response, 507, "insufficient_storage")
    assert _scratch(small_disk) == []
    assert full_client.get("/healthz").status_code == 200


def test_after_a_full_disk_the_next_small_upload_is_stored(
    full_client: Any, small_disk: Path, mlp_onnx: Path
) -> None:
    for route in ("/v1/models", "/v1/datasets"):
        refused = full_client.post(route, files={"file": ("big.bin", b"\x07" * 3_000_000)})
        assert refused.status_code == 507, refused.text

    model = full_client.post("/v1/models", files={"file": ("mlp.onnx", mlp_onnx.read_bytes())})
    dataset = full_client.post("/v1/datasets", files={"file": ("d.npz", _npz())})

    assert model.status_code == 201, model.text
    assert dataset.status_code == 201, dataset.text
    assert _scratch(small_disk) == []
