"""Starts a job's sandbox child with `subprocess`, watches it, and kills it when it must stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.core.errors import JobFailure
from worker.sandbox.limits import LIMITS_ENV
from worker.sandbox.protocol import REQUEST_FILE, SandboxRequest, SandboxResult, read_result

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout, put on the child's PYTHONPATH
# Only these variables reach the child: no database or broker URL, no credentials.
PASSTHROUGH_ENV = (
    "PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "MODELPRESS_CPU_FLAGS",  # the test suite runs the other CPU kind's int8 path with it
)  # fmt: skip
TICK_SECONDS = 0.25
KILL_GRACE_SECONDS = 3.0


@dataclass
class Outcome:
    result: SandboxResult | None
    returncode: int
    timed_out: bool = False
    cancelled: bool = False
    stderr_tail: str = ""
    progress: list[dict[str, Any]] = field(default_factory=list)


def child_env(settings: Settings, scratch: Path, device: str = "cpu") -> dict[str, str]:
    """The child's whole environment. A CUDA job gets no address-space cap: the CUDA driver
    reserves virtual memory far beyond what it uses (docs/reliability.md §5.1); cap it by cgroup."""
    threads = str(settings.sandbox_threads or os.cpu_count() or 1)
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.update(
        HOME=str(scratch),
        TMPDIR=str(scratch / "tmp"),
        PYTHONPATH=str(PROJECT_ROOT),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        OPENBLAS_NUM_THREADS=threads,
        TORCH_FORCE_WEIGHTS_ONLY_LOAD="1",
        MODELPRESS_SANDBOX="1",
    )
    limits = {
        "memory_bytes": 0 if device == "cuda" else settings.sandbox_memory_mb * 1024 * 1024,
        "cpu_seconds": settings.sandbox_cpu_seconds,
        "file_bytes": settings.sandbox_file_mb * 1024 * 1024,
        "open_files": 4096,
        "parent_pid": os.getpid(),
    }
    env[LIMITS_ENV] = json.dumps(limits)
    return env


def _read_progress(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    if not path.exists():
        return [], offset
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(1024 * 1024)
    complete = data[: data.rfind(b"\n") + 1]
    events = []
    for line in complete.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + len(complete)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, then SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_sandboxed(
    scratch: Path,
    request: SandboxRequest,
    settings: Settings,
    wall_seconds: float,
    on_tick: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> Outcome:
    """Run one request in a fresh child; `on_tick(progress)` returning True cancels it."""
    (scratch / "tmp").mkdir(exist_ok=True)
    request_path = scratch / REQUEST_FILE
    request_path.write_text(request.model_dump_json())
    with (scratch / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.sandbox", str(request_path)],
            cwd=scratch,
            env=child_env(settings, scratch, request.device),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            close_fds=True,
        )
        try:
            outcome = _watch(proc, scratch, wall_seconds, on_tick)
        except BaseException:
            _stop(proc)  # a soft time limit or shutdown in the supervisor takes the child along
            raise
    outcome.stderr_tail = (scratch / "stderr.log").read_text(errors="replace")[-4000:]
    if not outcome.timed_out and not outcome.cancelled:
        outcome.result = read_result(scratch)
    return outcome


def _watch(
    proc: subprocess.Popen[bytes],
    scratch: Path,
    wall_seconds: float,
    on_tick: Callable[[list[dict[str, Any]]], bool] | None,
) -> Outcome:
    deadline = time.monotonic() + wall_seconds
    offset, seen = 0, []
    while True:
        try:
            proc.wait(timeout=TICK_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        events, offset = _read_progress(scratch / "progress.jsonl", offset)
        seen.extend(events)
        if on_tick is not None and on_tick(events):
            _stop(proc)
            return Outcome(None, proc.returncode, cancelled=True, progress=seen)
        if time.monotonic() > deadline:
            _stop(proc)
            return Outcome(None, proc.returncode, timed_out=True, progress=seen)
    events, _ = _read_progress(scratch / "progress.jsonl", offset)
    return Outcome(None, proc.returncode, progress=seen + events)


def failure_of(outcome: Outcome, scratch: Path, wall_seconds: float) -> JobFailure | None:
    """Why a finished child failed, as the job's problem; None when it succeeded."""
    if outcome.timed_out:
        return JobFailure(
            "timeout", f"The job exceeded its wall-clock limit of {wall_seconds:.0f} s."
        )
    code = outcome.returncode
    if code < 0:
        sig = signal.Signals(-code)
        if sig == signal.SIGXCPU:
            return JobFailure("timeout", "The job exceeded its CPU-time limit.")
        if sig == signal.SIGXFSZ:
            return JobFailure("resource_exhausted", "The job exceeded its file size limit.")
        if sig == signal.SIGKILL:
            return JobFailure("resource_exhausted", "The job was killed (memory or CPU limit).")
        return JobFailure("loader_crashed", f"The model crashed its runtime (signal {sig.name}).")
    result = outcome.result
    if result is None:
        return JobFailure("job_error", f"The job process exited ({code}) without a result.")
    if not result.ok:
        error = result.error
        detail = (error.detail if error else "") or "failed"
        return JobFailure(
            (error.code if error else "") or "job_error", detail.replace(str(scratch), "<scratch>")
        )
    return None
