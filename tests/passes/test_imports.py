"""Every module under app/ imports without torch, onnx, onnxruntime, onnxconverter_common or tvm:
the API process imports them (to validate specs, serve routes, run the CLI) and must never load
an ML runtime. The one seam to worker code (app/worker_seam.py) is the documented exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEAM = "app.worker_seam"
MODULES = sorted(
    name
    for name in (
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "app").rglob("*.py")
    )
    if name != SEAM
)
HEAVY = "{'torch', 'onnx', 'onnxruntime', 'onnxconverter_common', 'tvm', 'worker'}"


@pytest.mark.parametrize("module", MODULES)
def test_app_module_imports_no_ml_runtime(module: str) -> None:
    code = f"import sys, {module}; heavy = {HEAVY} & set(sys.modules); sys.exit(sorted(heavy) or 0)"

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)

    assert done.returncode == 0, done.stderr


def test_the_catalog_modules_are_covered() -> None:
    assert {"app.passes.quantize", "app.passes.registry", "app.passes.spec"} <= set(MODULES)
