"""The sandbox supervisor with real child processes: environment, limits, kills, outcomes.

The child is `python -m worker.sandbox`; the tests drive it with real `inspect` and `run`
requests on the ONNX fixtures and look at it from outside through /proc while it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.core.config import Settings
from worker.sandbox import protocol, zygote
from worker.sandbox.isolation import PROJECT_ROOT
from worker.sandbox.limits import LIMITS_ENV
from worker.sandbox.protocol import ModelFile, SandboxRequest, SandboxResult
from worker.sandbox.supervisor import (
    PASSTHROUGH_ENV,
    Outcome,
    child_env,
    failure_of,
    run_sandboxed,
)

MIB = 1024 * 1024
SECRETS = {
    "MODELPRESS_DATABASE_URL": "postgresql://user:db-secret@db:5432/modelpress",
    "MODELPRESS_BROKER_URL": "redis://:broker-secret@redis:6379/0",
    "MODELPRESS_API_KEY_PEPPER": "pepper-secret",
    "MODELPRESS_STORAGE_URL": "/srv/artifacts",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "DATABASE_URL": "postgresql://user:other-secret@db/x",
    "REDIS_URL": "redis://:redis-secret@redis:6379",
}
CHILD_KEYS = {
    "HOME",
    "TMPDIR",
    "MODELPRESS_SANDBOX_JAIL",  # the jail's config: paths and the child's uid, no secret
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TORCH_FORCE_WEIGHTS_ONLY_LOAD",
    "MODELPRESS_SANDBOX",
    "MODELPRESS_EXTERNAL_DATA_THRESHOLD_BYTES",  # a size, no secret (worker/onnx_io.py)
    LIMITS_ENV,
    *PASSTHROUGH_ENV,
    # A child forked by the zygote shows the zygote's start-up environment in /proc: the same
    # job-independent keys, and the zygote's socket and parent (its job's own are in memory).
    zygote.FD_ENV,
    zygote.PARENT_ENV,
}
SIGNATURES = {
    "input_ids": (
        [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
        [{"name": "output", "dtype": "float32", "shape": ["batch", 4]}],
    ),
    "x": (
        [{"name": "x", "dtype": "float32", "shape": ["batch", 1024]}],
        [{"name": "y", "dtype": "float32", "shape": ["batch", 1024]}],
    ),
}
LIVENESS_SECONDS = 30.0
WALL_SECONDS = 1.0  # a few supervisor ticks; the long request needs minutes


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        sandbox_memory_mb=6144,
        sandbox_cpu_seconds=600,
        sandbox_file_mb=256,
        sandbox_threads=1,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


@pytest.fixture
def secrets_in_parent(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    return SECRETS


def _inspect_request(scratch: Path, model: Path) -> SandboxRequest:
    shutil.copyfile(model, scratch / "model.onnx")
    return _inspect("model.onnx")


def _inspect(path: str) -> SandboxRequest:
    return SandboxRequest(kind="inspect", model=ModelFile(path=path, format="onnx"))


def _run_request(spec: dict[str, Any], input_name: str) -> SandboxRequest:
    """A `run` request for the transformer (`input_ids`) or the big MatMul (`x`) in input/."""
    inputs, outputs = SIGNATURES[input_name]
    return SandboxRequest(
        kind="run",
        job_id="j",
        spec={"model_id": "m", **spec},
        model=ModelFile(
            path="input/model.onnx",
            format="onnx",
            inputs=inputs,
            outputs=outputs,
            public={"id": "m", "name": "m", "format": "onnx", "sha256": "0" * 64},
        ),
    )


def _long_request(scratch: Path, model: Path) -> SandboxRequest:
    """A valid job on the transformer that runs for minutes (a long benchmark), for kill paths."""
    (scratch / "input").mkdir()
    shutil.copyfile(model, scratch / "input/model.onnx")
    benchmark = {
        "batch_sizes": [64],
        "iterations": 2000,
        "time_budget_s": 1800,
        "input_shapes": {"input_ids": [64, 512]},
    }
    return _run_request({"steps": [{"op": "quantize"}], "benchmark": benchmark}, "input_ids")


def _child_of(request_path: Path, parent: int) -> int | None:
    """The pid of the sandbox child started for `request_path` by `parent`, if it runs."""
    needle = str(request_path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if b"worker.sandbox" in cmdline and needle in cmdline and ppid == parent:
            return int(entry.name)
        # A child forked by a zygote (of `parent`, or `parent` itself being one): the zygote's
        # command line, a zygote as its parent. One child at a time in these tests.
        forked = b"worker.sandbox.template" in cmdline and _is_zygote(ppid)
        if forked and parent in (ppid, _parent_of(ppid)):
            return int(entry.name)
    return None


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_zygote(pid: int) -> bool:
    """A zygote: its command line, and a parent that is not one (that would be its child)."""
    try:
        if b"worker.sandbox.template" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        parent = _parent_of(pid)
        return (
            parent is None
            or b"worker.sandbox.template" not in Path(f"/proc/{parent}/cmdline").read_bytes()
        )
    except OSError:
        return False


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = [item.decode(errors="replace").partition("=") for item in raw if item]
    return {key: value for key, _, value in pairs}


def _limits(pid: int) -> dict[str, str]:
    """Soft limits from /proc/<pid>/limits, by name (e.g. "Max address space")."""
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft = line[:26].strip(), line[26:].split()[0]
        out[name] = soft
    return out


def _gone(pid: int) -> bool:
    """True when the process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _watcher(
    scratch: Path, inspect: Callable[[int], bool], seen: dict[str, Any]
) -> Callable[[list[dict[str, Any]]], bool]:
    """An `on_tick` that finds the child and cancels once `inspect(pid)` is satisfied."""

    def on_tick(_events: list[dict[str, Any]]) -> bool:
        pid = seen.get("pid") or _child_of(scratch / "request.json", os.getpid())
        if pid is None:
            return False
        seen["pid"] = pid
        try:
            return inspect(pid)
        except OSError:
            return False

    return on_tick


# ------------------------------------------------------------------- environment (ISO-04)


def test_child_env_has_no_secrets(
    settings: Settings, scratch: Path, secrets_in_parent: dict[str, str]
) -> None:
    """ISO-04: database/broker URLs and credentials set in the parent never reach the child."""
    env = child_env(settings, scratch)

    leaked_keys = set(secrets_in_parent) & set(env)
    leaked_values = [v for v in secrets_in_parent.values() if any(v in x for x in env.values())]

    assert leaked_keys == set()
    assert leaked_values == []


def test_child_env_is_an_allowlist(
    settings: Settings, scratch: Path, secrets_in_parent: dict[str, str]
) -> None:
    """ISO-04: the child's environment holds only the listed keys, whatever the parent has."""
    env = child_env(settings, scratch)

    assert set(env) <= CHILD_KEYS


def test_child_env_forces_weights_only_torch_loading(settings: Settings, scratch: Path) -> None:
    env = child_env(settings, scratch)

    assert env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"


def test_child_env_pins_thread_counts(settings: Settings, scratch: Path) -> None:
    env = child_env(settings, scratch)

    threads = {env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}

    assert threads == {str(settings.sandbox_threads)}


def test_child_env_carries_the_limits(settings: Settings, scratch: Path) -> None:
    env = child_env(settings, scratch)

    limits = json.loads(env[LIMITS_ENV])

    assert limits == {
        "memory_bytes": settings.sandbox_memory_mb * MIB,
        "cpu_seconds": settings.sandbox_cpu_seconds,
        "file_bytes": settings.sandbox_file_mb * MIB,
        "open_files": 4096,
        "parent_pid": os.getpid(),
    }


def test_child_env_confines_home_and_tmp_to_scratch(settings: Settings, scratch: Path) -> None:
    env = child_env(settings, scratch)

    assert env["HOME"] == str(scratch)
    assert Path(env["TMPDIR"]).parent == scratch


def test_real_child_is_another_process_with_the_clean_env(
    settings: Settings,
    scratch: Path,
    transformer_onnx: Path,
    secrets_in_parent: dict[str, str],
) -> None:
    """ISO-04: read from /proc, the running child's environment has no secret of the parent."""
    seen: dict[str, Any] = {}

    def inspect(pid: int) -> bool:
        seen["environ"] = _environ(pid)
        return True

    outcome = run_sandboxed(
        scratch,
        _long_request(scratch, transformer_onnx),
        settings,
        LIVENESS_SECONDS,
        _watcher(scratch, inspect, seen),
    )

    assert outcome.cancelled
    assert seen["pid"] != os.getpid()
    assert set(seen["environ"]) <= CHILD_KEYS
    assert set(secrets_in_parent).isdisjoint(seen["environ"])
    assert seen["environ"]["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"


# ------------------------------------------------------------------------ limits (ISO-01/03)


def test_real_child_runs_under_the_configured_limits(
    settings: Settings, scratch: Path, transformer_onnx: Path
) -> None:
    """The child lowers its own rlimits before it reads the model (seen from /proc)."""
    seen: dict[str, Any] = {}

    def inspect(pid: int) -> bool:
        limits = _limits(pid)
        seen["limits"] = limits
        return limits["Max address space"] == str(settings.sandbox_memory_mb * MIB)

    run_sandboxed(
        scratch,
        _long_request(scratch, transformer_onnx),
        settings,
        LIVENESS_SECONDS,
        _watcher(scratch, inspect, seen),
    )

    assert seen["limits"]["Max address space"] == str(settings.sandbox_memory_mb * MIB)
    assert seen["limits"]["Max cpu time"] == str(settings.sandbox_cpu_seconds)
    assert seen["limits"]["Max file size"] == str(settings.sandbox_file_mb * MIB)
    assert seen["limits"]["Max open files"] == "4096"
    assert seen["limits"]["Max core file size"] == "0"


def _run_helper(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "helper.py"
    script.write_text(textwrap.dedent(body))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_memory_limit_stops_a_large_allocation(tmp_path: Path) -> None:
    """ISO-01: under a 512 MB address-space cap, allocating 2 GB raises MemoryError."""
    body = """
        import sys
        from worker.sandbox.limits import apply_limits

        apply_limits({"memory_bytes": 512 * 1024 * 1024})
        try:
            block = bytearray(2 * 1024 ** 3)
        except MemoryError:
            print("MemoryError")
            sys.exit(3)
        print("allocated", len(block))
    """

    done = _run_helper(tmp_path, body)

    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.strip() == "MemoryError"


def test_file_size_limit_stops_a_large_write(tmp_path: Path) -> None:
    """ISO-03: under a 1 MB file-size cap, writing 2 MB kills the process with SIGXFSZ (the
    sandbox restores the default action Python turns off, so native writers cannot be cut short
    silently)."""
    body = """
        import errno, sys
        from worker.sandbox.limits import apply_limits

        apply_limits({"file_bytes": 1024 * 1024})
        try:
            with open("big.bin", "wb") as fh:
                fh.write(b"x" * (2 * 1024 * 1024))
        except OSError as exc:
            print(errno.errorcode[exc.errno])
            sys.exit(3)
        print("written")
    """

    done = _run_helper(tmp_path, body)

    assert done.returncode == -signal.SIGXFSZ, done.stdout + done.stderr
    assert (tmp_path / "big.bin").stat().st_size <= 1024 * 1024


def _can_raise_hard_limits() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE (then any child could raise its limits)."""
    status = Path("/proc/self/status").read_text()
    effective = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
    return bool(int(effective, 16) >> 24 & 1)


@pytest.mark.skipif(_can_raise_hard_limits(), reason="CAP_SYS_RESOURCE lets a process raise them")
def test_lowered_limits_cannot_be_raised_again(tmp_path: Path) -> None:
    body = """
        import resource, sys
        from worker.sandbox.limits import apply_limits

        apply_limits({"memory_bytes": 512 * 1024 * 1024, "open_files": 64})
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        except ValueError:
            print("refused")
            sys.exit(3)
        print("raised")
    """

    done = _run_helper(tmp_path, body)

    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.strip() == "refused"


def _big_matmul(path: Path) -> Path:
    """A 1024x1024 float MatMul (4 MB of weights) built with onnx alone."""
    weight = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024])],
        [numpy_helper.from_array(weight, "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_job_past_its_memory_limit_fails_resource_exhausted(
    tmp_path: Path, scratch: Path, transformer_onnx: Path
) -> None:
    """ISO-01: a model whose run needs more memory than the cap fails `resource_exhausted`."""
    settings = Settings(data_dir=tmp_path / "data", sandbox_memory_mb=2048, sandbox_threads=1)
    (scratch / "input").mkdir()
    shutil.copyfile(transformer_onnx, scratch / "input/model.onnx")
    benchmark = {  # attention scores of 64 x 4 heads x 2048 x 2048 floats: 4 GB per tensor
        "batch_sizes": [64],
        "iterations": 5,
        "input_shapes": {"input_ids": [64, 2048]},
    }
    request = _run_request({"steps": [{"op": "quantize"}], "benchmark": benchmark}, "input_ids")

    outcome = run_sandboxed(scratch, request, settings, 120)

    failure = failure_of(outcome, scratch, 120)
    assert failure is not None
    assert failure.code == "resource_exhausted", failure.detail


def test_job_writing_past_its_file_size_limit_fails_resource_exhausted(
    tmp_path: Path, scratch: Path
) -> None:
    """ISO-03: an output larger than the file-size cap fails `resource_exhausted`."""
    settings = Settings(data_dir=tmp_path / "data", sandbox_file_mb=1, sandbox_threads=1)
    (scratch / "input").mkdir()
    _big_matmul(scratch / "input/model.onnx")  # its int8 version is just over 1 MB
    spec = {"steps": [{"op": "quantize"}], "benchmark": {"batch_sizes": [1], "iterations": 5}}
    request = _run_request(spec, "x")

    outcome = run_sandboxed(scratch, request, settings, 120)

    failure = failure_of(outcome, scratch, 120)
    assert failure is not None
    assert failure.code == "resource_exhausted", failure.detail


# ------------------------------------------------------------------------------ outcomes


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (Outcome(None, -signal.SIGSEGV), "loader_crashed"),
        (Outcome(None, -signal.SIGABRT), "loader_crashed"),
        (Outcome(None, -signal.SIGXCPU), "timeout"),
        (Outcome(None, -signal.SIGKILL), "resource_exhausted"),
        (Outcome(None, -signal.SIGTERM, timed_out=True), "timeout"),
        (Outcome(None, 0), "job_error"),
        (Outcome(None, 1), "job_error"),
        (
            Outcome(protocol.failure("model_rejected", "x"), 0),
            "model_rejected",
        ),
        (Outcome(SandboxResult(ok=False), 0), "job_error"),
    ],
    ids=[
        "sigsegv",
        "sigabrt",
        "sigxcpu",
        "sigkill",
        "timed_out",
        "no_result",
        "exit_1_no_result",
        "result_code",
        "result_without_code",
    ],
)
def test_failure_of_maps_outcomes_to_codes(outcome: Outcome, code: str, scratch: Path) -> None:
    failure = failure_of(outcome, scratch, 30)

    assert failure is not None
    assert failure.code == code


def test_failure_of_a_success_is_none(scratch: Path) -> None:
    outcome = Outcome(SandboxResult(ok=True), 0)

    failure = failure_of(outcome, scratch, 30)

    assert failure is None


def test_failure_of_names_the_crash_signal(scratch: Path) -> None:
    outcome = Outcome(None, -signal.SIGSEGV)

    failure = failure_of(outcome, scratch, 30)

    assert failure is not None
    assert "SIGSEGV" in failure.detail


def test_failure_of_scrubs_the_scratch_path(scratch: Path) -> None:
    detail = f"cannot read {scratch}/input/model.onnx (see {scratch}/stderr.log)"
    outcome = Outcome(protocol.failure("model_rejected", detail), 0)

    failure = failure_of(outcome, scratch, 30)

    assert failure is not None
    assert str(scratch) not in failure.detail
    assert failure.detail == "cannot read <scratch>/input/model.onnx (see <scratch>/stderr.log)"


# ------------------------------------------------------------------------- real children


def test_valid_onnx_inspection_returns_its_signature(
    settings: Settings, scratch: Path, mlp_onnx: Path, mlp_module: Any
) -> None:
    request = _inspect_request(scratch, mlp_onnx)

    outcome = run_sandboxed(scratch, request, settings, LIVENESS_SECONDS)

    assert failure_of(outcome, scratch, LIVENESS_SECONDS) is None
    assert outcome.result is not None and outcome.result.model is not None
    model = outcome.result.model
    assert model["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 32]}]
    assert model["outputs"] == [{"name": "output", "dtype": "float32", "shape": ["batch", 10]}]
    assert model["parameter_count"] == sum(p.numel() for p in mlp_module.parameters())


def test_corrupt_onnx_is_rejected_by_the_child(settings: Settings, scratch: Path) -> None:
    (scratch / "model.onnx").write_bytes(os.urandom(4096))
    request = _inspect("model.onnx")

    outcome = run_sandboxed(scratch, request, settings, LIVENESS_SECONDS)

    assert outcome.returncode == 0
    assert outcome.result is not None
    assert outcome.result.ok is False
    assert outcome.result.error is not None
    assert outcome.result.error.code == "model_rejected"


def test_real_child_failure_detail_is_scrubbed(settings: Settings, scratch: Path) -> None:
    """A child error that names a file in scratch reaches the job without the host path."""
    request = _inspect("missing.onnx")

    outcome = run_sandboxed(scratch, request, settings, LIVENESS_SECONDS)

    failure = failure_of(outcome, scratch, LIVENESS_SECONDS)
    assert failure is not None
    assert failure.code == "model_rejected"
    assert "<scratch>/missing.onnx" in failure.detail
    assert str(scratch) not in failure.detail


def test_wall_clock_limit_kills_the_child(
    settings: Settings, scratch: Path, transformer_onnx: Path
) -> None:
    """ISO-02: past its wall-clock limit the child is killed and reaped (no zombie left)."""
    seen: dict[str, Any] = {}
    on_tick = _watcher(scratch, lambda _pid: False, seen)
    request = _long_request(scratch, transformer_onnx)

    outcome = run_sandboxed(scratch, request, settings, WALL_SECONDS, on_tick)

    assert outcome.timed_out
    assert outcome.result is None
    assert outcome.returncode is not None and outcome.returncode < 0
    assert _gone(seen["pid"]) and not Path(f"/proc/{seen['pid']}").exists()
    assert failure_of(outcome, scratch, WALL_SECONDS).code == "timeout"


def test_on_tick_true_cancels_and_kills_the_child(
    settings: Settings, scratch: Path, transformer_onnx: Path
) -> None:
    """JOB-12: a cancel seen on a tick stops the child; the outcome says cancelled."""
    seen: dict[str, Any] = {}
    on_tick = _watcher(scratch, lambda _pid: True, seen)

    outcome = run_sandboxed(
        scratch, _long_request(scratch, transformer_onnx), settings, LIVENESS_SECONDS, on_tick
    )

    assert outcome.cancelled
    assert not outcome.timed_out
    assert outcome.result is None
    assert not Path(f"/proc/{seen['pid']}").exists()


@pytest.mark.parametrize("prefork", [False, True], ids=["fresh", "zygote"])
def test_child_dies_with_its_supervisor(
    tmp_path: Path, scratch: Path, transformer_onnx: Path, prefork: bool
) -> None:
    """ISO-10: when the supervisor is killed with SIGKILL, its sandbox child dies too (a forked
    child through its zygote, which dies with the supervisor)."""
    request = _long_request(scratch, transformer_onnx)
    script = tmp_path / "supervise.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from app.core.config import Settings
            from worker.sandbox.protocol import SandboxRequest
            from worker.sandbox.supervisor import run_sandboxed

            settings = Settings(
                data_dir=Path({str(tmp_path / "data")!r}),
                sandbox_threads=1,
                sandbox_memory_mb=6144,
                sandbox_prefork={prefork!r},
            )
            request = SandboxRequest.model_validate_json({request.model_dump_json()!r})
            run_sandboxed(Path({str(scratch)!r}), request, settings, 600)
            """
        )
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(PROJECT_ROOT)}
    supervisor = subprocess.Popen([sys.executable, str(script)], cwd=PROJECT_ROOT, env=env)
    try:
        parent = _zygote_of(supervisor.pid) if prefork else supervisor.pid
        child = _wait_for_armed_child(scratch / "request.json", parent, 6144 * MIB)

        supervisor.kill()
        supervisor.wait(timeout=LIVENESS_SECONDS)

        deadline = time.monotonic() + LIVENESS_SECONDS
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child)
    finally:
        supervisor.kill()
        supervisor.wait(timeout=LIVENESS_SECONDS)


def _zygote_of(supervisor: int) -> int:
    """The pid of the zygote `supervisor` started (once it runs)."""
    deadline = time.monotonic() + LIVENESS_SECONDS
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if b"worker.sandbox.template" in cmdline and ppid == supervisor:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError("the zygote did not start")


def _wait_for_armed_child(request_path: Path, parent: int, memory_bytes: int) -> int:
    """The child's pid once it has applied its limits (the death signal is armed with them)."""
    deadline = time.monotonic() + LIVENESS_SECONDS
    while time.monotonic() < deadline:
        pid = _child_of(request_path, parent)
        try:
            if pid is not None and _limits(pid)["Max address space"] == str(memory_bytes):
                time.sleep(0.5)  # the death signal is set right after the rlimits
                return pid
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("the sandbox child did not start")
