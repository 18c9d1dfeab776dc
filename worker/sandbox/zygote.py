"""A pre-started template for sandbox children: the runtimes imported once, one fork per child.

A fresh child costs an interpreter and the imports of torch and onnx (2 to 4 s of its start on
this machine kind) before it does any work. The zygote pays that once per worker process:

- the supervisor starts it lazily, with the children's own command line (`python -I -B -u`), the
  children's environment without anything of a job (HOME and TMPDIR in a private empty
  directory, the same thread counts: libgomp reads them when it is loaded), and no job's data;
- it imports numpy, torch, onnx and the job schemas (template.PRELOAD; not onnxruntime: its
  module starts a thread of its own on import, and a fork copies only the calling thread, so a
  process with other threads could hand a child a lock held forever). It then checks that the
  only other threads are OpenBLAS's (started by numpy; OpenBLAS shuts them down around a fork
  itself) and refuses to serve otherwise;
- each request forks one child. The child becomes what a freshly started child is: its own
  session, stdout and stderr to the job's `stderr.log`, the job's scratch as cwd, exactly the
  job's environment, and then the same `worker.sandbox.child.main`: it enters its jail (own mount,
  network and IPC namespaces, pivot_root, its own uid, no_new_privs), lowers its limits
  (the death signal armed on the zygote, which itself dies with its supervisor), and only then
  reads its request and model. Every isolation layer is applied to each child after the fork;
  the template itself never reads a request or a model and is never handed a job, so one
  job's child cannot leave anything behind for the next;
- it reaps its children and reports each exit status to the supervisor (a plain `waitpid`
  status: a signal stays a signal).

`MODELPRESS_SANDBOX_PREFORK=false` starts every child as a fresh process instead; a zygote that
cannot start or refuses (e.g. a thread appeared at import) does the same, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from worker.sandbox.isolation import isolated_python
from worker.sandbox.protocol import ZYGOTE_FD_ENV, ZYGOTE_MESSAGE_BYTES, ZYGOTE_PARENT_ENV

log = logging.getLogger(__name__)
READY_SECONDS = 120.0
# The template process runs worker/sandbox/template.py; this module never imports it (the
# supervisor side loads no model library: the import contracts in pyproject.toml).
SERVE = "from worker.sandbox.template import serve; serve()"
FD_ENV, PARENT_ENV = ZYGOTE_FD_ENV, ZYGOTE_PARENT_ENV


# ------------------------------------------------------------------- the supervisor's side


class ZygoteChild:
    """A child forked by the zygote, with what the supervisor uses of `subprocess.Popen`:
    `pid`, `returncode`, `poll()` and `wait(timeout)`."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.exit_status(self.pid, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"sandbox child {self.pid}", timeout or 0)
            self.returncode = self.zygote.exit_status(self.pid, min(left, 1.0))
        return self.returncode


class Zygote:
    """The supervisor's handle on its zygote: start, fork a child, collect exit statuses."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._next = 0
        self._home = tempfile.mkdtemp(prefix="modelpress-zygote-")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        start_env = {
            **env,
            "HOME": self._home,
            "TMPDIR": self._home,
            FD_ENV: str(theirs.fileno()),
            PARENT_ENV: str(os.getpid()),
        }
        self._log = Path(self._home) / "zygote.log"
        with self._log.open("wb") as log_file:
            self.proc = subprocess.Popen(
                isolated_python(SERVE),
                cwd=self._home,
                env=start_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        theirs.close()
        self.channel = mine
        ready = self._receive(READY_SECONDS)
        if not ready or not ready.get("ready"):
            why = (ready or {}).get("why") or self._stderr_tail() or "it did not answer"
            self.close()
            raise ZygoteUnavailable(f"the sandbox zygote did not start: {why}")

    def _stderr_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace").strip()[-500:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, request: Path, cwd: Path, env: dict[str, str], stdout: Path) -> ZygoteChild:
        """Fork one child for `request`; raises ZygoteUnavailable if the zygote is gone."""
        with self._lock:
            self._next += 1
            order = {
                "id": self._next,
                "request": str(request),
                "cwd": str(cwd),
                "env": env,
                "stdout": str(stdout),
            }
            try:
                self.channel.send(json.dumps(order).encode())
            except OSError as exc:
                raise ZygoteUnavailable(f"the sandbox zygote is gone: {exc}") from exc
            while True:
                message = self._receive(READY_SECONDS)
                if message is None:
                    raise ZygoteUnavailable("the sandbox zygote did not fork the child")
                if message.get("id") == order["id"]:
                    return ZygoteChild(self, int(message["pid"]))

    def exit_status(self, pid: int, timeout: float) -> int | None:
        """The child's exit status once the zygote reports it (None while it runs); a zygote
        that died took its children along (their death signal): -SIGKILL."""
        with self._lock:
            if pid not in self._exits:
                self._receive(timeout)
            if pid in self._exits:
                return self._exits.pop(pid)
            if not self.alive():
                return -signal.SIGKILL
        return None

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        """One message (exit statuses are filed as they come); None on timeout or EOF."""
        readable, _, _ = select.select([self.channel], [], [], max(timeout, 0.0))
        if not readable:
            return None
        try:
            raw = self.channel.recv(ZYGOTE_MESSAGE_BYTES)
        except OSError:
            return None
        if not raw:
            return None
        message: dict[str, Any] = json.loads(raw)
        if "returncode" in message:
            self._exits[int(message["pid"])] = int(message["returncode"])
        return message

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for entry in Path(self._home).iterdir():
            entry.unlink()
        os.rmdir(self._home)


class ZygoteUnavailable(RuntimeError):
    """The zygote could not start, or died: the supervisor starts a fresh child instead."""


_current: Zygote | None = None
_current_lock = threading.Lock()
_keeper: queue.Queue[tuple[dict[str, str], queue.Queue[Zygote | BaseException]]] | None = None


def _keep() -> None:
    assert _keeper is not None
    while True:
        env, answer = _keeper.get()
        try:
            answer.put(Zygote(env))
        except BaseException as exc:  # handed to the caller, who decides
            answer.put(exc)


def _start(env: dict[str, str]) -> Zygote:
    """Start a zygote from one long-lived thread: the kernel's parent-death signal fires when
    the *thread* that started a process ends, and a job's thread may end before the zygote
    should (a zygote dies with the worker process, not with the job that first needed it)."""
    global _keeper
    if _keeper is None:
        _keeper = queue.Queue()
        threading.Thread(target=_keep, name="sandbox-zygote-keeper", daemon=True).start()
    answer: queue.Queue[Zygote | BaseException] = queue.Queue()
    _keeper.put((env, answer))
    started = answer.get()
    if isinstance(started, BaseException):
        raise started
    return started


def zygote_for(env: dict[str, str]) -> Zygote | None:
    """This worker process's zygote for children with `env` (the job-independent part), started
    on first use and again when it died or `env` changed; None (with a warning) where it
    cannot start."""
    global _current
    with _current_lock:
        if _current is not None and _current.alive() and _current.env == env:
            return _current
        if _current is not None:
            _current.close()
            _current = None
        try:
            _current = _start(env)
        except (ZygoteUnavailable, OSError) as exc:
            log.warning("sandbox children start fresh (no zygote)", extra={"why": str(exc)})
            return None
        return _current


def shutdown() -> None:
    """Stop this process's zygote (tests; a worker's exit takes it along by its death signal)."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.close()
            _current = None
