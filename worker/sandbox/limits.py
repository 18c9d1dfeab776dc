"""The sandbox child's own limits: rlimits lowered before any byte of the model is read, and death
with its supervisor (PDEATHSIG)."""

from __future__ import annotations

import os
import resource
import signal

LIMITS_ENV = "MODELPRESS_SANDBOX_LIMITS"
PR_SET_PDEATHSIG = 1


def apply_limits(limits: dict[str, int]) -> None:
    """Lower soft and hard limits (they cannot be raised again without privileges)."""
    table = {
        "memory_bytes": resource.RLIMIT_AS,
        "cpu_seconds": resource.RLIMIT_CPU,
        "file_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
    }
    for key, which in table.items():
        if limits.get(key):
            resource.setrlimit(which, (limits[key], limits[key]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Python ignores SIGXFSZ, so a write past the file limit from native code would be cut short
    # silently; dying by the signal lets the supervisor report `resource_exhausted`.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    die_with_parent(limits.get("parent_pid"), signal.SIGKILL)


def die_with_parent(parent_pid: int | None, sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)  # the supervisor died before the death signal was armed
