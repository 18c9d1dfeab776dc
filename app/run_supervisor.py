"""`modelpress run`'s watch over its embedded worker process.

The worker is a separate process (the API never imports torch). If it dies (kill -9, the OOM
killer, a crash in native code) it is started again within seconds, told which worker it
replaces: the new one requeues that worker's running job at once (worker/reaper.py
`requeue_abandoned`), so the interrupted job runs again, exactly once (its old attempt can no
longer publish: the job's attempt number moved on). A worker that keeps dying right after its
start is restarted with a growing delay, not in a tight loop.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
FIRST_DELAY_SECONDS, MAX_DELAY_SECONDS, STABLE_SECONDS = 1.0, 30.0, 30.0


def worker_name(pid: int) -> str:
    """The name a worker process claims jobs under (worker/execute.py WORKER_NAME)."""
    return f"{socket.gethostname()}:{pid}"


class EmbeddedWorker:
    """Starts the embedded worker and restarts it whenever it dies, until `stop`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def _spawn(self, replaces: str | None) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "app.cli", "worker", "--embedded"]
        argv += ["--parent-pid", str(os.getpid())]
        if replaces:
            argv += ["--replaces", replaces]
        return subprocess.Popen(argv)

    def start(self) -> None:
        self.proc = self._spawn(None)
        self._thread.start()

    def _watch(self) -> None:
        delay, started = FIRST_DELAY_SECONDS, time.monotonic()
        while not self._stopping.wait(POLL_SECONDS):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            delay = (
                FIRST_DELAY_SECONDS if lived > STABLE_SECONDS else min(delay * 2, MAX_DELAY_SECONDS)
            )
            log.error(
                "the embedded worker died; starting a new one",
                extra={"pid": proc.pid, "returncode": proc.returncode, "restart_in_s": delay},
            )
            if self._stopping.wait(delay if lived <= STABLE_SECONDS else FIRST_DELAY_SECONDS):
                return
            self.proc = self._spawn(worker_name(proc.pid))
            self.restarts += 1
            started = time.monotonic()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, then stop the worker (it requeues an interrupted job before it exits)."""
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
