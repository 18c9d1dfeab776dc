"""The sandbox jail, proved from inside: code running where a job's child runs (after the jail,
as a loader exploit would) cannot read the supervisor's environment, reach the network or the
database, write outside its scratch, or see other files of the host. Real processes, real
namespaces; on a host where the jail cannot be built (not root) these tests skip loudly."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.core.errors import JobFailure
from worker.sandbox import isolation
from worker.sandbox.isolation import hand_over, isolated_python, jail_config, jail_for
from worker.sandbox.jail import JAIL_ENV
from worker.sandbox.supervisor import _watch, failure_of

SECRET = "MODELPRESS_DATABASE_URL"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(SECRET, "postgresql://user:db-secret@127.0.0.1:5432/test")
    return Settings(data_dir=tmp_path / "data", sandbox_isolation="required")


@pytest.fixture
def scratch(settings: Settings) -> Path:
    path = settings.storage_root / "scratch" / "job-probe-a1-0"
    path.mkdir(parents=True)
    return path


@pytest.fixture(autouse=True)
def _jail_available() -> None:
    why = isolation._probe((Settings().sandbox_uid_base, str(isolation.PROJECT_ROOT)))
    if why is not None:
        pytest.skip(f"THE SANDBOX JAIL CANNOT BE BUILT ON THIS HOST: {why}")


def _inside_jail(settings: Settings, scratch: Path, body: str) -> dict[str, Any]:
    """Run `body` (which fills the dict `seen`) in a jailed child, as a job's child runs."""
    config = jail_for(settings, scratch)
    assert config is not None
    hand_over(scratch, config)
    code = (
        "from worker.sandbox.jail import enter_from_env\nenter_from_env()\n"
        "import json, os, socket\nseen = {}\n" + textwrap.dedent(body) + "\nprint(json.dumps(seen))"
    )
    env = {"PATH": os.environ.get("PATH", ""), JAIL_ENV: config.to_env()}
    done = subprocess.run(
        isolated_python(code), cwd=scratch, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _error(call: str) -> str:
    return f"""
try:
    {call}
    result = "allowed"
except OSError as exc:
    result = type(exc).__name__ + ": " + str(exc.errno)
"""


def test_the_child_runs_as_its_own_unprivileged_uid(settings: Settings, scratch: Path) -> None:
    seen = _inside_jail(
        settings,
        scratch,
        """
seen["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
seen["groups"] = os.getgroups()
seen["status"] = open("/proc/self/status").read()
""",
    )

    uid = settings.sandbox_uid_base + os.getpid()
    assert seen["ids"] == [uid] * 4 and uid != 0
    assert seen["groups"] == []
    assert "NoNewPrivs:\t1" in seen["status"]


def test_the_child_cannot_read_the_supervisors_environment(
    settings: Settings, scratch: Path
) -> None:
    ppid = os.getpid()
    seen = _inside_jail(
        settings,
        scratch,
        _error(f"seen['environ'] = open('/proc/{ppid}/environ').read()")
        + "seen['result'] = result\n"
        + "seen['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())",
    )

    assert seen["result"] != "allowed"
    assert "environ" not in seen
    assert ppid not in seen["pids"]  # hidepid: only its own processes are visible


@pytest.mark.parametrize(
    "address",
    [("127.0.0.1", 6379), ("127.0.0.1", 5432), ("169.254.169.254", 80), ("1.1.1.1", 443)],
)
def test_the_child_cannot_open_a_network_connection(
    settings: Settings, scratch: Path, address: tuple[str, int]
) -> None:
    seen = _inside_jail(
        settings,
        scratch,
        _error(f"socket.create_connection({address!r}, timeout=3)") + "seen['result'] = result",
    )

    assert seen["result"] != "allowed"


def test_the_database_unix_socket_is_not_there(settings: Settings, scratch: Path) -> None:
    seen = _inside_jail(
        settings,
        scratch,
        "seen['run'] = os.listdir('/run'); seen['var'] = os.listdir('/var')\n"
        + _error("socket.socket(socket.AF_UNIX).connect('/run/postgresql/.s.PGSQL.5432')")
        + "seen['result'] = result",
    )

    assert seen["run"] == [] and seen["var"] == []
    assert seen["result"] != "allowed"


def test_the_child_writes_only_its_scratch(settings: Settings, scratch: Path) -> None:
    targets = ["/tmp/escape", "/etc/escape", str(isolation.PROJECT_ROOT / "escape"),
               str(settings.storage_root / "escape"), "/dev/shm/escape"]  # fmt: skip
    body = "seen['denied'] = {}\n"
    for target in targets:
        body += (
            _error(f"open({target!r}, 'w').write('x')") + f"seen['denied'][{target!r}] = result\n"
        )
    body += "open('inside', 'w').write('ok'); seen['inside'] = open('inside').read()"

    seen = _inside_jail(settings, scratch, body)

    assert seen["inside"] == "ok" and (scratch / "inside").read_text() == "ok"
    assert all(result != "allowed" for result in seen["denied"].values()), seen["denied"]
    for target in targets:
        assert not Path(target).exists()


def test_the_child_sees_no_other_data_of_the_host(
    settings: Settings, scratch: Path, tmp_path: Path
) -> None:
    blob = settings.storage_root / "sha256" / "ab" / "cd" / "another-tenants-blob"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"secret weights")
    (scratch.parent / "job-other-a1-0").mkdir()
    seen = _inside_jail(
        settings,
        scratch,
        f"""
seen["root_home"] = os.listdir("/root")
seen["blob"] = os.path.exists({str(blob)!r})
seen["scratch_parent"] = os.listdir({str(scratch.parent)!r})
seen["tmp"] = os.listdir("/tmp")
""",
    )

    assert not seen["blob"]
    assert seen["scratch_parent"] == [scratch.name]
    assert ".bash_history" not in seen["root_home"] and ".ssh" not in seen["root_home"]


@pytest.mark.parametrize("prefork", [False, True], ids=["fresh", "zygote"])
def test_a_real_job_child_runs_jailed(
    settings: Settings, scratch: Path, mlp_onnx: Path, prefork: bool
) -> None:
    """The supervisor's own launch paths (a fresh child, one forked by the zygote): an ONNX
    inspection inside the jail succeeds, the files it writes are its own uid's, and its uid
    (read from /proc while it runs) becomes its own and stays so."""
    from worker.sandbox.protocol import ModelFile, SandboxRequest
    from worker.sandbox.supervisor import run_sandboxed

    settings = settings.model_copy(update={"sandbox_prefork": prefork})

    (scratch / "model.onnx").write_bytes(mlp_onnx.read_bytes())
    uids: list[int] = []

    def tick(_events: list[dict[str, Any]]) -> bool:
        for pid in os.listdir("/proc"):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            parent = int(status.split("PPid:")[1].split()[0])
            # A fresh child names its request; one forked by the zygote is the zygote's child.
            if str(scratch).encode() in cmdline or parent == _zygote_pid():
                uids.append(int(status.split("Uid:")[1].split()[0]))
        return False

    request = SandboxRequest(kind="inspect", model=ModelFile(path="model.onnx", format="onnx"))
    outcome = run_sandboxed(scratch, request, settings, 120, tick)

    assert failure_of(outcome, scratch, 120) is None, outcome.stderr_tail
    assert outcome.result is not None and outcome.result.model
    jailed = settings.sandbox_uid_base + os.getpid()
    assert (scratch / "result.json").stat().st_uid == jailed
    # It starts as root only to build the jail, before it reads the request or the model; once
    # it has dropped to its own uid it never holds another. (A forked child may finish its
    # inspection before the first tick looks: it has no imports of its own to wait for.)
    if not prefork:
        assert jailed in uids
    if jailed in uids:
        assert set(uids[uids.index(jailed) :]) == {jailed}


def _zygote_pid() -> int:
    from worker.sandbox import zygote

    current = zygote._current
    return current.proc.pid if current is not None else -1


# ---------------------------------------------------------------- degrading loudly


def test_auto_warns_loudly_where_the_jail_cannot_be_built(
    settings: Settings,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(isolation, "_probe", lambda _key: "no mount namespaces here")
    auto = settings.model_copy(update={"sandbox_isolation": "auto"})

    with caplog.at_level(logging.WARNING):
        assert jail_for(auto, scratch) is None

    assert "SANDBOX ISOLATION UNAVAILABLE" in caplog.text


def test_required_fails_the_job_where_the_jail_cannot_be_built(
    settings: Settings, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(isolation, "_probe", lambda _key: "no mount namespaces here")

    with pytest.raises(JobFailure) as caught:
        jail_for(settings, scratch)

    assert caught.value.code == "sandbox_unavailable"


def test_each_concurrent_child_gets_its_own_uid(settings: Settings, scratch: Path) -> None:
    """The uid follows the supervisor's pid: two workers' children cannot signal each other."""
    here = jail_config(settings, scratch).uid
    code = (
        "import os; from pathlib import Path; from app.core.config import Settings; "
        "from worker.sandbox.isolation import jail_config; "
        f"print(jail_config(Settings(data_dir=Path({str(settings.data_dir)!r})), "
        f"Path({str(scratch)!r})).uid)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=isolation.PROJECT_ROOT,
    )  # fmt: skip

    assert int(other.stdout) != here


# ---------------------------------------------------------------- the memory watchdog


def test_the_watchdog_stops_a_child_past_its_resident_memory(tmp_path: Path) -> None:
    """CUDA children have no address-space cap (the driver reserves far more than it uses):
    their resident memory is watched instead."""
    hog = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(300 * 2**20); time.sleep(60)"],
        start_new_session=True,
    )
    started = time.monotonic()

    outcome = _watch(hog, tmp_path, 60, None, max_resident=100 * 2**20)

    assert outcome.memory_exceeded
    assert time.monotonic() - started < 30
    failure = failure_of(outcome, tmp_path, 60)
    assert failure is not None and failure.code == "resource_exhausted"
    assert hog.poll() is not None
