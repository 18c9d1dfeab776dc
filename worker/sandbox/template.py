"""The zygote's own process (`python -I -B -u -c "...serve()"`, started by worker/sandbox/zygote.py,
whose docstring says why and how): it imports the costly, thread-free part of a child's imports
once, then forks one child per request; each child becomes a fresh child and runs
`worker.sandbox.child.main`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

from worker.sandbox.limits import LIMITS_ENV, die_with_parent
from worker.sandbox.protocol import ZYGOTE_FD_ENV, ZYGOTE_MESSAGE_BYTES, ZYGOTE_PARENT_ENV

# What the template imports: the costly part of a child's imports that starts no thread.
PRELOAD = (
    "torch",
    "torch.export",
    "onnx",
    "onnx.helper",
    "onnx.numpy_helper",
    "onnx.shape_inference",
    "app.jobs.schemas",
    "app.passes.spec",
    "app.artifacts.schemas",
    "worker.sandbox.child",
)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def serve() -> None:
    """The zygote's main loop (the socket's fd in ZYGOTE_FD_ENV)."""
    channel = socket.socket(fileno=int(os.environ.pop(ZYGOTE_FD_ENV)))
    die_with_parent(int(os.environ.pop(ZYGOTE_PARENT_ENV, "0")) or None, signal.SIGKILL)
    import numpy  # noqa: F401  (OpenBLAS starts its threads here)

    expected = _threads()
    for name in PRELOAD:
        __import__(name)
    threads = _threads()
    if threads != expected:
        why = f"{threads - expected} thread(s) started by importing {', '.join(PRELOAD)}"
        _send(channel, {"ready": False, "why": why})
        return
    _send(channel, {"ready": True, "pid": os.getpid()})
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([channel], [], [], 0.2 if children else None)
        if readable:
            raw = channel.recv(ZYGOTE_MESSAGE_BYTES)
            if not raw:
                return  # the supervisor is gone: its children got their death signal already
            order = json.loads(raw)
            pid = os.fork()
            if pid == 0:
                _become_child(channel, order)  # never returns
            children.add(pid)
            _send(channel, {"id": order["id"], "pid": pid})
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                _send(channel, {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _become_child(channel: socket.socket, order: dict[str, Any]) -> None:
    """In the forked child: exactly a fresh child's start, then its main. Never returns."""
    code = 70
    try:
        channel.close()
        os.setsid()
        out = os.open(order["stdout"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(order["cwd"])
        env = dict(order["env"])
        # The child's death signal is armed on its parent, which is this zygote now.
        limits = json.loads(env.get(LIMITS_ENV, "{}"))
        limits["parent_pid"] = os.getppid()
        env[LIMITS_ENV] = json.dumps(limits)
        os.environ.clear()
        os.environ.update(env)
        import tempfile as _tempfile

        _tempfile.tempdir = None  # computed again from the job's TMPDIR when first used
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from worker.sandbox.child import main

        sys.argv = ["worker.sandbox", order["request"]]
        code = main(sys.argv)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    channel.send(json.dumps(message).encode())
