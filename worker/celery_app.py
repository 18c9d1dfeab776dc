"""The Celery application of the Redis-mode worker (tasks take ids only; see worker/tasks.py)."""

from __future__ import annotations

from celery import Celery

from app.core.config import get_settings
from app.core.logging import configure_logging
from app.core.queue import celery_config

configure_logging()
celery_app = Celery("modelpress", include=["worker.tasks"])
celery_app.conf.update(celery_config(get_settings()))
