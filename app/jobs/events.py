"""A job's live events (`GET /v1/jobs/{id}/events`) and log (`GET /v1/jobs/{id}/logs`).

Every event is a row of `job_event`, written in the transaction of the change it tells of (the
submit, the claim, a terminal transition, a requeue) or by the worker's heartbeat, which relays
the sandbox child's steps, progress and log lines at most once a second. The stream is read from
the database, so any API replica serves any job's events, and `seq` (the SSE `id`) comes from
`job.event_seq`, bumped by the UPDATE that hands it out: gap-free and increasing per job under
concurrent writers (on Postgres the UPDATE locks the job row until the commit; on SQLite the
transaction holds the one write lock).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.orm import Job, JobEvent
from app.db.orm.job import TERMINAL

STATUS, STEP, PROGRESS, LOG, VERDICT = "status", "step", "progress", "log", "verdict"
EVENT_NAMES = (STATUS, STEP, PROGRESS, LOG, VERDICT)
LOGS_MAX_BYTES = 1024 * 1024  # `GET /v1/jobs/{id}/logs` answers at most the log's last 1 MB
MESSAGE_MAX_CHARS = 2000  # one log line (a longer one is cut, marked with an ellipsis)


def clip(text: object, limit: int = MESSAGE_MAX_CHARS) -> str:
    """One line of text of at most `limit` characters."""
    value = " ".join(str(text).split("\n")).strip()
    return value if len(value) <= limit else value[: limit - 1] + "…"


def record(session: Session, job_id: str, event: str, data: dict[str, Any]) -> int | None:
    """Append one event to the job's stream; returns its `seq` (None: the job is gone)."""
    return record_many(session, job_id, [(event, data)])


def record_many(
    session: Session, job_id: str, events: Sequence[tuple[str, dict[str, Any]]]
) -> int | None:
    """Append events in order with one counter UPDATE; returns the last `seq` (None: no job)."""
    if not events:
        return None
    stmt = (
        update(Job)
        .where(Job.id == job_id)
        .values(event_seq=Job.event_seq + len(events), updated_at=Job.updated_at)
        .returning(Job.event_seq, Job.tenant_id)
    )
    row = session.execute(stmt).one_or_none()
    if row is None:
        return None
    last, tenant_id = int(row[0]), str(row[1])
    now = utcnow()
    first = last - len(events) + 1
    session.add_all(
        JobEvent(
            job_id=job_id, tenant_id=tenant_id, seq=first + i, event=name, data=data, created_at=now
        )
        for i, (name, data) in enumerate(events)
    )
    session.flush()
    return last


def status_data(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """The data of a `status` event: the job's id and status (and e.g. attempt, error)."""
    return {
        "id": job_id,
        "status": str(status),
        **{k: v for k, v in extra.items() if v is not None},
    }


def record_status(session: Session, job_id: str, status: str, **extra: Any) -> int | None:
    return record(session, job_id, STATUS, status_data(job_id, status, **extra))


def log_data(
    message: str, source: str = "worker", level: str = "info", **extra: Any
) -> dict[str, Any]:
    """A `log` event's data; `ts` is when the line was said (epoch seconds)."""
    return {"message": clip(message), "source": source, "level": level, "ts": time.time(), **extra}


def record_log(
    session: Session, job_id: str, message: str, source: str = "worker", level: str = "info"
) -> int | None:
    return record(session, job_id, LOG, log_data(message, source, level))


def is_terminal_event(event: str, data: dict[str, Any]) -> bool:
    return event == STATUS and data.get("status") in TERMINAL


def after(session: Session, job_id: str, seq: int, limit: int = 500) -> list[JobEvent]:
    """The job's events after `seq`, in order (the caller checked the tenant)."""
    stmt = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
        .order_by(JobEvent.seq)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def log_line(created_at: datetime, data: dict[str, Any]) -> str:
    """One line of `GET /logs`: UTC time (the line's own `ts` where it has one: a worker
    relays the job's lines in batches), source (worker or job), level, message."""
    ts = data.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and 0 < ts < 1e11:
        created_at = datetime.fromtimestamp(ts, UTC)
    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    source = str(data.get("source", "worker"))
    level = str(data.get("level", "info")).upper()
    return f"{stamp} {source} {level} {clip(data.get('message', ''))}\n"


def log_tail(session: Session, job_id: str, max_bytes: int = LOGS_MAX_BYTES) -> str:
    """The job's log lines, oldest first, at most the last `max_bytes` (whole lines)."""
    lines: list[str] = []
    size, before = 0, None
    while True:
        stmt = select(JobEvent.seq, JobEvent.created_at, JobEvent.data).where(
            JobEvent.job_id == job_id, JobEvent.event == LOG
        )
        if before is not None:
            stmt = stmt.where(JobEvent.seq < before)
        rows = list(session.execute(stmt.order_by(JobEvent.seq.desc()).limit(500)))
        for seq, created_at, data in rows:
            line = log_line(created_at, data or {})
            size += len(line.encode())
            if size > max_bytes:
                return "".join(reversed(lines))
            lines.append(line)
            before = seq
        if len(rows) < 500:
            return "".join(reversed(lines))


def delete_for(session: Session, job_ids: Iterable[str]) -> None:
    """Drop the events of deleted jobs (the foreign key cascades too; this needs no pragma)."""
    ids = list(job_ids)
    if ids:
        session.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
