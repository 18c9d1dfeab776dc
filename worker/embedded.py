"""The embedded worker: no broker, the database is the queue (see CONTRIBUTING.md)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from app.core.config import Settings
from app.db.session import session_scope
from app.jobs import repository as jobs
from app.ml_models import repository as models
from worker import reaper
from worker.execute import execute_inspection, execute_job

log = logging.getLogger(__name__)
REAP_EVERY_SECONDS = 5.0


def work_once(settings: Settings, stop: threading.Event) -> bool:
    """Inspect one validating model or run one queued job; False when there was nothing."""
    with session_scope() as session:
        model_ids = models.validating_ids(session)
        job_id = None if model_ids else jobs.next_queued(session)
    if model_ids:
        execute_inspection(model_ids[0], settings)
        return True
    if job_id:
        execute_job(job_id, settings, stop.is_set)
        return True
    return False


def _housekeep(settings: Settings, stop: threading.Event) -> None:
    """The scheduler's tick, beside the work: leases, webhooks, retention and the blob collector
    keep going while a long job runs (there is no separate scheduler in the embedded mode)."""
    while not stop.wait(REAP_EVERY_SECONDS):
        try:
            reaper.tick(settings)
        except Exception:
            log.exception("housekeeping round failed")


def run_embedded_worker(settings: Settings, stop: threading.Event | None = None) -> None:
    """Poll until SIGTERM/SIGINT; a job interrupted by the stop is requeued, not lost."""
    stop = stop or threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    housekeeping = threading.Thread(
        target=_housekeep, args=(settings, stop), name="housekeeping", daemon=True
    )
    housekeeping.start()
    log.info("embedded worker started")
    while not stop.is_set():
        try:
            busy = work_once(settings, stop)
        except Exception:
            log.exception("embedded worker round failed")
            busy = False
        if not busy:
            stop.wait(settings.poll_interval_seconds)
    log.info("embedded worker stopped")
