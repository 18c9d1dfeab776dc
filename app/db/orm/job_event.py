"""One event in a job's live stream (`GET /v1/jobs/{id}/events`, `/logs`).

`seq` is gap-free and increasing per job: every writer takes it from `job.event_seq` with the
same UPDATE that bumps the counter (app/jobs/events.py), which also locks the job row on
Postgres, so the heartbeat thread, the final transition, the reaper and an API cancel never
hand out the same number. The stream lives in the database, not in one process, so any API
replica can serve it. Deleting a job deletes its events (ON DELETE CASCADE).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class JobEvent(Base):
    __tablename__ = "job_event"
    # The unique (job_id, seq) index is also the one every stream read walks.
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_event_job_id_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
