"""Dispatch: "run job X" / "inspect model X" messages, published only after the commit.

Two transports share one contract (the database is the source of truth; a message only says
"look at row X"):
- Redis + Celery (`MODELPRESS_BROKER_URL` set): tasks carry the id alone.
- Embedded (no broker): nothing is published; the local worker polls the database for queued
  jobs and validating models, claiming each with a conditional update. See CONTRIBUTING.md.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings

log = logging.getLogger(__name__)

RUN_JOB = "modelpress.run_job"
INSPECT_MODEL = "modelpress.inspect_model"
CPU_QUEUE = "modelpress.cpu"
CUDA_QUEUE = "modelpress.cuda"  # consumed by `modelpress worker --device cuda`
_PENDING = "modelpress_pending_messages"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings both the publisher and the worker use (docs/reliability.md §3.3)."""
    hard = settings.sandbox_wall_seconds + 120
    return {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": hard,
        "task_soft_time_limit": hard - 60,
        # Longer than the hard limit, so a running task is never redelivered while it runs.
        "broker_transport_options": {"visibility_timeout": hard + 600},
        "task_default_queue": CPU_QUEUE,
        "task_ignore_result": True,
        "result_backend": None,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }


@lru_cache(maxsize=4)
def _celery_for(broker_url: str) -> Any:
    from celery import Celery

    app = Celery("modelpress")
    app.conf.update(celery_config(get_settings()))
    app.conf.broker_url = broker_url
    return app


def job_queue(device: str) -> str:
    """The queue of a job's device: CUDA jobs go to the CUDA worker pool."""
    return CUDA_QUEUE if device == "cuda" else CPU_QUEUE


def publish(
    name: str, object_id: str, settings: Settings | None = None, queue: str = CPU_QUEUE
) -> None:
    """Send one message now (callers normally use `publish_after_commit`)."""
    settings = settings or get_settings()
    if settings.embedded_queue or not settings.broker_url:
        return  # the embedded worker polls the database
    _celery_for(settings.broker_url).send_task(name, args=[object_id], queue=queue)


def publish_after_commit(
    session: Session, name: str, object_id: str, queue: str = CPU_QUEUE
) -> None:
    """Queue a message that goes out only if (and once) the session's transaction commits."""
    session.info.setdefault(_PENDING, []).append((name, object_id, queue))


@event.listens_for(Session, "after_commit")
def _flush_messages(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    for name, object_id, queue in pending:
        try:
            publish(name, object_id, queue=queue)
        except Exception:
            # The row is committed as queued: the scheduler re-publishes it (a healing outbox).
            log.exception("publish failed; the scheduler will re-dispatch", extra={"id": object_id})


@event.listens_for(Session, "after_rollback")
def _drop_messages(session: Session) -> None:
    session.info.pop(_PENDING, None)
