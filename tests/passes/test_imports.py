"""Every module under app/ imports without torch, onnx, onnxruntime, onnxconverter_common or tvm:
the API process imports them (to validate specs, serve routes, run the CLI) and must never load
an ML runtime. The one seam to worker code (app/worker_seam.py) is the documented exception."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
HEAVY = {"torch", "onnx", "onnxruntime", "onnxconverter_common", "tvm", "worker"}
# One process imports the modules one after another and names the first one after whose import
# a heavy module was loaded (one process per module took a minute of CI for the same answer: a
# module that loads none of them adds none to the process).
PROBE = """
import importlib, json, sys
heavy = set(json.loads(sys.argv[1]))
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
    loaded = sorted(heavy & {m.split(".")[0] for m in sys.modules})
    if loaded:
        sys.exit(f"{name} loads {loaded}")
"""


def _probe(modules: list[str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", PROBE, json.dumps(sorted(HEAVY)), json.dumps(modules)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)


def test_no_app_module_imports_an_ml_runtime() -> None:
    done = _probe(MODULES)

    assert done.returncode == 0, done.stderr


def test_the_probe_names_a_module_that_loads_one() -> None:
    done = _probe(["app.core.errors", SEAM, "app.main"])

    assert done.returncode == 1
    assert f"{SEAM} loads" in done.stderr


def test_the_catalog_modules_are_covered() -> None:
    assert {"app.passes.quantize", "app.passes.registry", "app.passes.spec"} <= set(MODULES)
