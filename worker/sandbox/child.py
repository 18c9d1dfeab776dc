"""The per-job child process (`python -m worker.sandbox <scratch>/request.json`).

It runs with no database or broker URL, no secrets, its own scratch directory as HOME and TMPDIR,
and it lowers its own resource limits before it reads a single byte of the model (address space,
CPU time, file size, open files, no core dumps) and asks the kernel to kill it if its supervisor
dies. It reports through files in its scratch directory: `progress.jsonl` while it works and
`result.json` at the end. Everything heavy (torch, onnx, onnxruntime) is imported after the limits.
"""

from __future__ import annotations

import errno
import json
import os
import traceback
from pathlib import Path
from typing import Any

from worker.sandbox.limits import LIMITS_ENV, apply_limits


def write_result(scratch: Path, result: dict[str, Any]) -> None:
    tmp = scratch / "result.json.tmp"
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, scratch / "result.json")


def _failure(code: str, detail: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "detail": detail[:2000]}}


OUT_OF_MEMORY_MARKS = ("failed to allocate memory", "bad_alloc", "cannot allocate memory")


def _classify(exc: Exception) -> dict[str, Any]:
    """Resource errors raised by native code (ONNX Runtime, torch) keep their meaning."""
    text = str(exc)
    if any(mark in text.lower() for mark in OUT_OF_MEMORY_MARKS):
        return _failure("resource_exhausted", f"The job ran out of its memory limit: {text[:300]}")
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return _failure("resource_exhausted", "The job exceeded its file size limit.")
    return _failure("job_error", f"{type(exc).__name__}: {text}")


def main(argv: list[str]) -> int:
    request_path = Path(argv[1]).resolve()
    scratch = request_path.parent
    apply_limits(json.loads(os.environ.get(LIMITS_ENV, "{}")))
    request = json.loads(request_path.read_text())
    try:
        from app.core.errors import JobFailure

        try:
            if request["kind"] == "inspect":
                from worker.pipeline.inspect import inspect_model

                result: dict[str, Any] = {"ok": True, "model": inspect_model(scratch, request)}
            else:
                from worker.pipeline.run import run_pipeline

                result = {"ok": True, **run_pipeline(scratch, request)}
        except JobFailure as exc:
            result = _failure(exc.code, exc.detail)
    except MemoryError:
        result = _failure("resource_exhausted", "The job ran out of its memory limit.")
    except Exception as exc:
        traceback.print_exc()
        result = _classify(exc)
    write_result(scratch, result)
    return 0

