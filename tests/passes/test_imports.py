"""Every pass module imports without torch, onnx, onnxruntime or onnxconverter_common: the API
process imports them all (to validate specs) and must never load an ML runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(f"app.passes.{p.stem}" for p in (ROOT / "app" / "passes").glob("*.py"))
HEAVY = "{'torch', 'onnx', 'onnxruntime', 'onnxconverter_common', 'tvm'}"


@pytest.mark.parametrize("module", MODULES)
def test_pass_module_imports_no_ml_runtime(module: str) -> None:
    code = f"import sys, {module}; heavy = {HEAVY} & set(sys.modules); sys.exit(sorted(heavy) or 0)"

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)

    assert done.returncode == 0, done.stderr
