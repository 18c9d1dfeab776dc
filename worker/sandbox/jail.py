"""The sandbox child's jail: its own uid, no network, a filesystem where only scratch is writable.

The child enters it first thing, while it is still root and before it reads a byte of the model:

- new mount, network and IPC namespaces. The network namespace has only a loopback interface,
  down: no TCP/UDP to anything (Redis, Postgres, the metadata address), no abstract Unix sockets
  of the host;
- a new root (pivot_root) holding only what Python needs, read-only: /usr, /etc, /lib*, /bin,
  /sbin, /opt, /sys, the interpreter's prefix, the virtual environment and the project. Home
  directories, /tmp, /run (the database's Unix socket), /var, the data directory, the blob
  store and other jobs' scratch are simply not there. The job's scratch is the one writable
  path, bound at its own path. /dev holds null, zero, full, random, urandom (and the NVIDIA
  device nodes when present); /proc is a fresh instance with `hidepid=2`;
- then its own unprivileged uid and gid (no supplementary groups), `no_new_privs`, not
  dumpable, and `RLIMIT_NPROC`. As another uid it cannot read the supervisor's /proc/<pid>/environ
  or signal it; one uid per concurrent child keeps children of different jobs apart too.

Only root can build this. Without root (a developer's laptop), `MODELPRESS_SANDBOX_ISOLATION=auto`
runs the child with its rlimits and clean environment alone and logs a loud warning per child;
`required` refuses to run a job then (docs/reliability.md §3).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path

JAIL_ENV = "MODELPRESS_SANDBOX_JAIL"

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

SYSTEM_DIRS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/sys",
)
DEVICES = ("null", "zero", "full", "random", "urandom")
NVIDIA_DEVICE_PREFIX = "nvidia"


class JailError(RuntimeError):
    """A layer of the jail could not be built (the child must not go on without it)."""


@dataclass
class JailConfig:
    """What the supervisor tells the child about its jail (JSON in MODELPRESS_SANDBOX_JAIL)."""

    scratch: str
    uid: int
    gid: int
    readable: list[str] = field(default_factory=list)  # bound read-only, beside SYSTEM_DIRS
    hidden: list[str] = field(default_factory=list)  # emptied even if under a readable path
    max_processes: int = 512

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, raw: str) -> JailConfig:
        return cls(**json.loads(raw))


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise JailError(f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _bind(source: str, target: str, *, writable: bool = False) -> None:
    """Bind `source` at `target` (recursively), then make it read-only unless `writable`."""
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    _mount(None, target, None, flags)


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _place(root: Path, source: str, *, writable: bool = False) -> None:
    """Make `source` appear at the same path inside the new root (a symlink stays a symlink)."""
    src = Path(source)
    if not src.exists():
        return
    target = _inside(root, source)
    if src.is_symlink() and str(src.parent) == "/":
        if not target.is_symlink():
            target.symlink_to(os.readlink(src))
        return
    if src.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    _bind(str(src.resolve()), str(target), writable=writable)


def _devices(root: Path) -> None:
    dev = root / "dev"
    dev.mkdir(exist_ok=True)
    _mount("tmpfs", str(dev), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    names = list(DEVICES) + [n for n in os.listdir("/dev") if n.startswith(NVIDIA_DEVICE_PREFIX)]
    for name in names:
        if os.path.exists(f"/dev/{name}") and not os.path.isdir(f"/dev/{name}"):
            (dev / name).touch()
            _mount(f"/dev/{name}", str(dev / name), None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        (dev / name).symlink_to(target)
    _mount(None, str(dev), None, MS_REMOUNT | MS_NOSUID | MS_NOEXEC | MS_RDONLY, "mode=0755")


def _pivot(root: Path) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise JailError(f"pivot_root: unknown syscall number on {platform.machine()}")
    old = root / ".old-root"
    old.mkdir(exist_ok=True)
    os.chdir(root)
    _check(_libc.syscall(number, b".", b".old-root"), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", MNT_DETACH), "umount the old root")
    os.rmdir("/.old-root")


def build_root(config: JailConfig) -> None:
    """The new root: a tmpfs with the read-only system, the readable paths, writable scratch."""
    root = Path(config.scratch) / ".root"
    root.mkdir(mode=0o755, exist_ok=True)
    _mount("tmpfs", str(root), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    for path in sorted({*SYSTEM_DIRS, *config.readable}, key=len):
        _place(root, path)
    emptied = []
    for path in config.hidden:  # e.g. the data directory inside the project: mounted empty
        target = _inside(root, path)
        if target.is_dir():
            _mount("tmpfs", str(target), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
            emptied.append(target)
    _place(root, config.scratch, writable=True)
    _devices(root)
    (root / "proc").mkdir(exist_ok=True)
    _mount("proc", str(root / "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    for name in ("tmp", "run", "var"):
        (root / name).mkdir(exist_ok=True)
    for target in emptied:
        _mount(None, str(target), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _pivot(root)
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def drop_privileges(config: JailConfig) -> None:
    """Become the child's own uid for good; no setuid binary can give anything back."""
    resource.setrlimit(resource.RLIMIT_NPROC, (config.max_processes, config.max_processes))
    os.setgroups([])
    os.setresgid(config.gid, config.gid, config.gid)
    os.setresuid(config.uid, config.uid, config.uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "not dumpable")
    if os.getuid() != config.uid or os.geteuid() != config.uid:
        raise JailError("the uid did not change")


def enter(config: JailConfig) -> None:
    """Unshare, build the root, drop privileges; raises JailError if any layer fails."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    build_root(config)
    os.chdir(config.scratch)
    drop_privileges(config)


def enter_from_env() -> bool:
    """Enter the jail the supervisor asked for; False when it asked for none."""
    raw = os.environ.pop(JAIL_ENV, None)
    if not raw:
        return False
    enter(JailConfig.from_env(raw))
    return True
