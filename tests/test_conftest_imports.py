"""tests/conftest.py loads no model library: the API-side tests collect and run without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
sys.path.insert(0, "tests")
import conftest
assert conftest.mlp_onnx and conftest.transformer_onnx  # the network fixtures are still there
heavy = sorted(m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_importing_the_root_conftest_loads_no_model_library() -> None:
    command = [sys.executable, "-c", SCRIPT]

    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY=\n" in proc.stdout, proc.stdout
