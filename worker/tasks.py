"""Celery tasks: thin: an id to worker.execute, which claims it in the database."""

from __future__ import annotations

from celery.signals import worker_ready

from app.core.config import get_settings
from app.core.queue import INSPECT_MODEL, RUN_JOB
from worker.celery_app import celery_app
from worker.execute import execute_inspection, execute_job


@celery_app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> None:
    """Run job `job_id`; a redelivered copy finds nothing to claim and returns."""
    execute_job(job_id, get_settings())


@celery_app.task(name=INSPECT_MODEL, acks_late=True, reject_on_worker_lost=True)
def inspect_model(model_id: str) -> None:
    """Inspect model `model_id` in a sandbox (idempotent: only a validating model is updated)."""
    execute_inspection(model_id, get_settings())


@worker_ready.connect
def _redispatch_on_start(**_kwargs: object) -> None:
    """After any restart, queued jobs are dispatched again (a copy already in Redis is a no-op)."""
    from worker.reaper import redispatch

    redispatch(get_settings(), everything=True)
