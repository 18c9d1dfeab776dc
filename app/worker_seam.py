"""The one module of `app` that imports `worker`: what `modelpress worker|scheduler` run.

`app.cli` imports it inside those two commands only, so that `modelpress api` and the client
commands never load worker code (nor, through it, a model library).
"""

from __future__ import annotations

import signal
import time

from app.core.config import Settings
from worker.celery_app import celery_app
from worker.embedded import run_embedded_worker
from worker.reaper import requeue_abandoned, tick
from worker.sandbox.limits import die_with_parent


def run_embedded(settings: Settings, parent_pid: int | None, replaces: str | None = None) -> None:
    """Poll the database for work; with `parent_pid`, stop when that process dies; `replaces`
    names a dead worker whose running job is requeued first (`modelpress run` restarts)."""
    if parent_pid:
        # `modelpress run` starts this worker: it must not outlive the API that spawned it.
        die_with_parent(parent_pid, signal.SIGTERM)
    if replaces:
        requeue_abandoned(settings, replaces)
    run_embedded_worker(settings)


def run_celery_worker(queue: str, concurrency: int) -> None:
    """A Celery worker consuming one queue, one job per process at a time."""
    argv = ["worker", "-Q", queue, "-O", "fair", "--loglevel", "INFO"]
    argv += ["--concurrency", str(concurrency)]
    celery_app.worker_main(argv)


def run_scheduler(settings: Settings, interval: float, once: bool) -> None:
    """Housekeeping every `interval` seconds (reaper, re-dispatch, blobs); one tick with `once`."""
    while True:
        tick(settings)
        if once:
            return
        time.sleep(interval)
