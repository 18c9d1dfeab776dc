"""The `modelpress` client commands against a live embedded server (what a CI pipeline runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _cli(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "MODELPRESS_URL": str(server.base_url)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_optimize_waits_and_downloads_the_model_and_reports(
    server: Any, mlp_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dist"

    done = _cli(
        server,
        "optimize",
        str(mlp_onnx),
        "--wait",
        "--out",
        str(out),
        "--benchmark",
        '{"batch_sizes": [1], "iterations": 5}',
        "--allow-slower",  # int8 on a tiny MLP may well be slower: not what this test is about
    )

    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"model.onnx", "report.json", "report.html"}
    report = json.loads((out / "report.json").read_text())
    assert report["optimized"]["size_bytes"] == (out / "model.onnx").stat().st_size


def test_optimize_exits_2_when_the_budget_is_missed(
    server: Any, mlp_onnx: Path, tmp_path: Path
) -> None:
    done = _cli(
        server,
        "optimize",
        str(mlp_onnx),
        "--wait",
        "--out",
        str(tmp_path / "d"),
        "--min-speedup",
        "1000",
        "--benchmark",
        '{"batch_sizes": [1], "iterations": 5}',
    )

    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["verdict"]["met"] is False


def test_a_refused_upload_exits_3_with_the_problem(server: Any, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")

    done = _cli(server, "optimize", str(junk), "--wait")

    assert done.returncode == 3
    assert "unsupported_model_format" in done.stderr
