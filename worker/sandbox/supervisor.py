"""Starts a job's sandbox child with `subprocess`, watches it, and kills it when it must stop."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.core.config import Settings
from app.core.errors import JobFailure
from worker.sandbox.isolation import child_command, hand_over, jail_for
from worker.sandbox.jail import JAIL_ENV
from worker.sandbox.limits import LIMITS_ENV
from worker.sandbox.protocol import REQUEST_FILE, SandboxRequest, SandboxResult, read_result
from worker.sandbox.zygote import ZygoteUnavailable, zygote_for

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Only these variables reach the child: no database or broker URL, no credentials.
PASSTHROUGH_ENV = (
    "PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "MODELPRESS_CPU_FLAGS",  # the test suite runs the other CPU kind's int8 path with it
)  # fmt: skip
TICK_SECONDS = 0.25
KILL_GRACE_SECONDS = 3.0


class Child(Protocol):
    """What the supervisor uses of a running child: a fresh `subprocess.Popen` or one forked by
    the zygote (worker/sandbox/zygote.py)."""

    pid: int
    returncode: Any  # None while it runs, as with Popen

    def wait(self, timeout: float | None = None) -> int: ...


# The per-job part of a child's environment; the rest is the same for every child of a worker,
# and the zygote is started with it.
PER_JOB_ENV = ("HOME", "TMPDIR", LIMITS_ENV, JAIL_ENV)


@dataclass
class Outcome:
    result: SandboxResult | None
    returncode: int
    timed_out: bool = False
    cancelled: bool = False
    memory_exceeded: bool = False
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
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        OPENBLAS_NUM_THREADS=threads,
        TORCH_FORCE_WEIGHTS_ONLY_LOAD="1",
        MODELPRESS_SANDBOX="1",
        MODELPRESS_EXTERNAL_DATA_THRESHOLD_BYTES=str(settings.external_data_threshold_bytes),
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
    if not complete and len(data) == 1024 * 1024:
        return [], offset + len(data)  # a line longer than a read: skipped, not waited on
    events = []
    for line in complete.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + len(complete)


def _stop(proc: Child) -> None:
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
    request.sent_at = time.time()  # the child's report counts its start-up from here
    request_path.write_text(request.model_dump_json())
    env = child_env(settings, scratch, request.device)
    jail = jail_for(settings, scratch)
    with (scratch / "stderr.log").open("wb") as err:
        if jail is not None:
            env[JAIL_ENV] = jail.to_env()
            hand_over(scratch, jail)
        proc = _start_child(settings, request_path, scratch, env, err)
        try:
            outcome = _watch(proc, scratch, wall_seconds, on_tick, settings.sandbox_memory_mb * MIB)
        except BaseException:
            _stop(proc)  # a soft time limit or shutdown in the supervisor takes the child along
            raise
    outcome.stderr_tail = (scratch / "stderr.log").read_text(errors="replace")[-4000:]
    if not (outcome.timed_out or outcome.cancelled or outcome.memory_exceeded):
        outcome.result = read_result(scratch)
    return outcome


def _start_child(
    settings: Settings, request_path: Path, scratch: Path, env: dict[str, str], err: Any
) -> Child:
    """A child forked by this worker's zygote (MODELPRESS_SANDBOX_PREFORK, the default), or a
    fresh process where there is none. Either way the child itself builds its jail and limits."""
    if settings.sandbox_prefork:
        zygote = zygote_for({k: v for k, v in env.items() if k not in PER_JOB_ENV})
        if zygote is not None:
            try:
                return zygote.spawn(request_path, scratch, env, scratch / "stderr.log")
            except ZygoteUnavailable as exc:
                log.warning("the sandbox zygote failed; a fresh child", extra={"why": str(exc)})
    return subprocess.Popen(
        child_command(request_path),
        cwd=scratch,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=err,
        stderr=err,
        start_new_session=True,
        close_fds=True,
    )


def resident_bytes(pid: int) -> int:
    """The process's resident memory (VmRSS), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _watch(
    proc: Child,
    scratch: Path,
    wall_seconds: float,
    on_tick: Callable[[list[dict[str, Any]]], bool] | None,
    max_resident: int = 0,
) -> Outcome:
    """Wait for the child, relaying progress; stop it at the wall limit, on cancel, or when its
    resident memory passes `max_resident` (the watchdog of CUDA children, which have no
    address-space cap; for CPU children RLIMIT_AS acts first)."""
    deadline = time.monotonic() + wall_seconds
    offset, seen = 0, list[dict[str, Any]]()
    while True:
        try:
            proc.wait(timeout=TICK_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if max_resident and resident_bytes(proc.pid) > max_resident:
            _stop(proc)
            return Outcome(None, -signal.SIGKILL, memory_exceeded=True, progress=seen)
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


DISK_FULL_BYTES = 1024 * 1024


def _disk_full(scratch: Path) -> bool:
    """A child that could not even write its result, on a disk with (almost) no room left."""
    try:
        return shutil.disk_usage(scratch).free < DISK_FULL_BYTES
    except OSError:
        return False


def failure_of(outcome: Outcome, scratch: Path, wall_seconds: float) -> JobFailure | None:
    """Why a finished child failed, as the job's problem; None when it succeeded."""
    if outcome.timed_out:
        return JobFailure(
            "timeout", f"The job exceeded its wall-clock limit of {wall_seconds:.0f} s."
        )
    if outcome.memory_exceeded:
        return JobFailure("resource_exhausted", "The job passed its memory limit and was killed.")
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
    if result is None and _disk_full(scratch):
        return JobFailure("insufficient_storage", "The worker's disk filled up during the job.")
    if result is None:
        return JobFailure("job_error", f"The job process exited ({code}) without a result.")
    if not result.ok:
        error = result.error
        detail = (error.detail if error else "") or "failed"
        return JobFailure(
            (error.code if error else "") or "job_error", detail.replace(str(scratch), "<scratch>")
        )
    return None
