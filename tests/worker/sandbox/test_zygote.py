"""The zygote (worker/sandbox/zygote.py): sandbox children forked from a template that imported
torch and onnx once, each one a new process with its own exit status, the template never a job."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from worker.sandbox import zygote
from worker.sandbox.protocol import ModelFile, SandboxRequest
from worker.sandbox.supervisor import failure_of, run_sandboxed


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", sandbox_threads=1, sandbox_memory_mb=6144)


@pytest.fixture(autouse=True)
def _fresh_zygote() -> Any:
    zygote.shutdown()
    yield
    zygote.shutdown()


def _scratch(settings: Settings, name: str, model: Path) -> Path:
    path = settings.storage_root / "scratch" / name
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(model.read_bytes())
    return path


def _inspect(settings: Settings, scratch: Path) -> tuple[Any, list[int]]:
    """Inspect the scratch's model; returns the outcome and the pids of the child seen."""
    pids: list[int] = []

    def tick(_events: list[dict[str, Any]]) -> bool:
        current = zygote._current
        if current is not None:
            for entry in Path("/proc").iterdir():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == current.proc.pid:
                    pids.append(int(entry.name))
        return False

    request = SandboxRequest(kind="inspect", model=ModelFile(path="model.onnx", format="onnx"))
    return run_sandboxed(scratch, request, settings, 120, tick), pids


def test_children_come_from_one_zygote_and_are_new_processes(
    settings: Settings, mlp_onnx: Path
) -> None:
    first, _ = _inspect(settings, _scratch(settings, "job-a-a1-0", mlp_onnx))
    template = zygote._current
    assert template is not None and template.alive()
    second, _ = _inspect(settings, _scratch(settings, "job-b-a1-0", mlp_onnx))

    for outcome in (first, second):
        assert outcome.returncode == 0
        assert outcome.result is not None and outcome.result.model
    assert zygote._current is template  # the same template served both, and still waits
    assert template.alive()


def test_a_forked_child_reports_its_own_signal(settings: Settings, mlp_onnx: Path) -> None:
    """A child killed by a signal is reported as that signal (failure_of reads it), as a fresh
    child's would be."""
    scratch = _scratch(settings, "job-c-a1-0", mlp_onnx)
    env = {"PATH": os.environ.get("PATH", "")}
    template = zygote.zygote_for(env)
    assert template is not None
    (scratch / "stderr.log").touch()
    os.mkfifo(scratch / "request.json")  # the child waits in reading it
    child = template.spawn(scratch / "request.json", scratch, env, scratch / "stderr.log")
    time.sleep(0.5)
    os.kill(child.pid, signal.SIGKILL)

    assert child.wait(timeout=60) == -signal.SIGKILL
    assert child.pid != template.proc.pid


def test_a_dead_zygote_is_replaced(settings: Settings, mlp_onnx: Path) -> None:
    _inspect(settings, _scratch(settings, "job-d-a1-0", mlp_onnx))
    first = zygote._current
    assert first is not None
    first.proc.kill()
    first.proc.wait()

    outcome, _ = _inspect(settings, _scratch(settings, "job-e-a1-0", mlp_onnx))

    assert failure_of(outcome, settings.storage_root, 120) is None, outcome.stderr_tail
    assert zygote._current is not None and zygote._current is not first


def test_a_zygote_that_dies_takes_its_running_child_along(
    settings: Settings, mlp_onnx: Path
) -> None:
    scratch = _scratch(settings, "job-f-a1-0", mlp_onnx)
    env = {"PATH": os.environ.get("PATH", "")}
    template = zygote.zygote_for(env)
    assert template is not None
    (scratch / "stderr.log").touch()
    # A request path that is a FIFO keeps child.main blocked in reading it, after its limits
    # (and its death signal) are armed.
    os.mkfifo(scratch / "request.json")
    child = template.spawn(scratch / "request.json", scratch, env, scratch / "stderr.log")
    time.sleep(1.0)
    template.proc.kill()

    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}").exists() and time.monotonic() < deadline:
        status = Path(f"/proc/{child.pid}/status").read_text(errors="replace")
        if "State:\tZ" in status:
            break
        time.sleep(0.1)
    alive = Path(f"/proc/{child.pid}").exists() and "State:\tZ" not in Path(
        f"/proc/{child.pid}/status"
    ).read_text(errors="replace")
    assert not alive
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_prefork_off_starts_no_zygote(settings: Settings, mlp_onnx: Path) -> None:
    settings = settings.model_copy(update={"sandbox_prefork": False})
    outcome, _ = _inspect(settings, _scratch(settings, "job-g-a1-0", mlp_onnx))

    assert outcome.returncode == 0 and outcome.result is not None
    assert zygote._current is None


def test_the_zygote_is_still_one_thread_beside_openblas(settings: Settings) -> None:
    """What it imported started no thread of its own (it refuses to serve otherwise): its
    threads are its main one and OpenBLAS's (OPENBLAS_NUM_THREADS - 1 of them)."""
    template = zygote.zygote_for({"PATH": os.environ.get("PATH", ""), "OPENBLAS_NUM_THREADS": "1"})
    assert template is not None

    assert len(os.listdir(f"/proc/{template.proc.pid}/task")) == 1


def test_the_zygote_outlives_the_thread_that_first_needed_it(settings: Settings) -> None:
    """The parent-death signal follows the thread that started a process: a zygote first
    needed by a job's thread must not die when that thread ends."""
    import threading

    started: list[Any] = []
    thread = threading.Thread(
        target=lambda: started.append(zygote.zygote_for({"PATH": os.environ.get("PATH", "")}))
    )
    thread.start()
    thread.join()
    time.sleep(1.0)

    assert started[0] is not None
    assert started[0].alive()
