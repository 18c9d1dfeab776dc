"""The supervisor's side of the jail: whether it can be built here, and its config per child.

The probe runs once per worker process: a real child enters a real jail in a temporary scratch.
Where it fails (not root, no mount namespaces in a container) `auto` warns loudly on every job
and runs the child with its rlimits and clean environment only; `required` fails the job with
`sandbox_unavailable` instead. Nothing degrades silently.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from app.core.config import Settings
from app.core.errors import JobFailure
from worker.sandbox.jail import JAIL_ENV, JailConfig

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The probe enters a jail and writes in its scratch, as a job's child would.
PROBE = "from worker.sandbox.jail import enter_from_env; enter_from_env(); open('probe', 'w')"


def isolated_python(code: str) -> list[str]:
    """`python -I -c code` with this checkout importable: isolated mode ignores every PYTHON*
    variable and the user's site directory, so the project root is put on the path explicitly."""
    return [
        sys.executable,
        "-I",
        "-c",
        f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); {code}",
    ]


def child_command(request: Path) -> list[str]:
    """The command line of a job's child: `worker.sandbox` run isolated on `request`."""
    run = "import runpy; runpy.run_module('worker.sandbox', run_name='__main__', alter_sys=True)"
    return [*isolated_python(run), str(request)]


def jail_config(settings: Settings, scratch: Path) -> JailConfig:
    """The jail of one child: its uid, what it may read, what must look empty."""
    uid = settings.sandbox_uid_base + os.getpid()
    readable = sorted({sys.base_prefix, sys.prefix, str(PROJECT_ROOT)})
    hidden = sorted({str(settings.data_dir.resolve()), str(settings.storage_root.resolve())})
    return JailConfig(
        scratch=str(scratch.resolve()), uid=uid, gid=uid, readable=readable, hidden=hidden
    )


def hand_over(scratch: Path, config: JailConfig) -> None:
    """Give the scratch tree to the child's uid (it writes there and nowhere else)."""
    for directory, dirs, files in os.walk(scratch):
        os.chown(directory, config.uid, config.gid)
        for name in dirs + files:
            os.chown(os.path.join(directory, name), config.uid, config.gid, follow_symlinks=False)


@functools.cache
def _probe(settings_key: tuple[int, str]) -> str | None:
    """None when a real child could enter a real jail here, else why not."""
    if os.geteuid() != 0:
        return "the worker does not run as root"
    with tempfile.TemporaryDirectory(prefix="modelpress-jail-probe-") as tmp:
        config = JailConfig(
            scratch=tmp,
            uid=settings_key[0] + os.getpid(),
            gid=settings_key[0] + os.getpid(),
            readable=sorted({sys.base_prefix, sys.prefix, str(PROJECT_ROOT)}),
        )
        hand_over(Path(tmp), config)
        env = {"PATH": os.environ.get("PATH", ""), JAIL_ENV: config.to_env()}
        done = subprocess.run(
            isolated_python(PROBE),
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return None


def jail_for(settings: Settings, scratch: Path) -> JailConfig | None:
    """The jail this child gets, or None (with a warning) where none can be built.

    Raises:
        JobFailure: `sandbox_unavailable` when isolation is `required` and cannot be built.
    """
    if settings.sandbox_isolation == "off":
        return None
    why = _probe((settings.sandbox_uid_base, str(PROJECT_ROOT)))
    if why is None:
        return jail_config(settings, scratch)
    if settings.sandbox_isolation == "required":
        raise JobFailure("sandbox_unavailable", f"The sandbox jail cannot be built here: {why}.")
    log.warning(
        "SANDBOX ISOLATION UNAVAILABLE: this job's child runs as the worker's own user, with "
        "network access and the worker's files in reach; only its rlimits and clean environment "
        "contain it. Run the worker as root (or set MODELPRESS_SANDBOX_ISOLATION=required to "
        "refuse jobs instead).",
        extra={"why": why},
    )
    return None
