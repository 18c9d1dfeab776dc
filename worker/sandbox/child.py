"""The per-job child process (`python -m worker.sandbox <scratch>/request.json`).

It runs with no database or broker URL, no secrets, its own scratch directory as HOME and TMPDIR.
It first enters its jail (worker/sandbox/jail.py: own uid, no network, only scratch writable),
then it lowers its own resource limits before it reads a single byte of the model (address space,
CPU time, file size, open files, no core dumps) and asks the kernel to kill it if its supervisor
dies. It reports through files in its scratch directory: `progress.jsonl` while it works and
`result.json` at the end; its log records go to `progress.jsonl` too, as `log` lines the
supervisor relays to the job's events and log. Everything heavy (torch, onnx, onnxruntime) is
imported after the limits.
"""

from __future__ import annotations

import errno
import json
import os
import traceback
from pathlib import Path

from app.core.errors import JobFailure
from worker.sandbox.jail import JailError, enter_from_env
from worker.sandbox.limits import LIMITS_ENV, apply_limits
from worker.sandbox.progress import install_log_lines
from worker.sandbox.protocol import RESULT_FILE, SandboxRequest, SandboxResult, failure


def write_result(scratch: Path, result: SandboxResult) -> None:
    tmp = scratch / f"{RESULT_FILE}.tmp"
    tmp.write_text(result.model_dump_json())
    os.replace(tmp, scratch / RESULT_FILE)


OUT_OF_MEMORY_MARKS = ("failed to allocate memory", "bad_alloc", "cannot allocate memory")
DISK_FULL_MARKS = ("no space left on device", "disk quota exceeded")


def _classify(exc: Exception) -> SandboxResult:
    """Resource errors raised by native code (ONNX Runtime, torch) keep their meaning."""
    text = str(exc)
    if any(mark in text.lower() for mark in OUT_OF_MEMORY_MARKS):
        return failure("resource_exhausted", f"The job ran out of its memory limit: {text[:300]}")
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return failure("resource_exhausted", "The job exceeded its file size limit.")
    disk_full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if disk_full or any(mark in text.lower() for mark in DISK_FULL_MARKS):
        return failure("insufficient_storage", "The worker's disk filled up during the job.")
    return failure("job_error", f"{type(exc).__name__}: {text}")


def _serve(scratch: Path, request: SandboxRequest) -> SandboxResult:
    # Model libraries are imported only now, after the limits, and only those the kind needs
    # (an ONNX inspection loads no torch).
    if request.kind == "inspect":
        from worker.pipeline.inspect import inspect_model

        return SandboxResult(ok=True, model=inspect_model(scratch, request))
    from worker.pipeline.run import run_pipeline

    return run_pipeline(scratch, request)


def main(argv: list[str]) -> int:
    request_path = Path(argv[1]).resolve()
    scratch = request_path.parent
    try:
        enter_from_env()  # first, as root: own uid, no network, only scratch writable
    except (JailError, OSError) as exc:
        write_result(scratch, failure("sandbox_unavailable", f"The sandbox jail failed: {exc}"))
        return 0
    apply_limits(json.loads(os.environ.get(LIMITS_ENV, "{}")))
    install_log_lines(scratch)
    request = SandboxRequest.model_validate_json(request_path.read_bytes())
    try:
        result = _serve(scratch, request)
    except JobFailure as exc:
        result = failure(exc.code, exc.detail)
    except MemoryError:
        result = failure("resource_exhausted", "The job ran out of its memory limit.")
    except Exception as exc:
        traceback.print_exc()
        result = _classify(exc)
    write_result(scratch, result)
    return 0
