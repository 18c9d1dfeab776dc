"""Every query on the webhook outbox; a sender claims a row with one conditional update."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.orm import DeliveryStatus, Job, WebhookDelivery


def terminal_view(session: Session, job_id: str) -> dict[str, Any] | None:
    """The job's columns as this transaction sees them (after its own conditional update)."""
    stmt = select(
        Job.id, Job.tenant_id, Job.model_id, Job.status, Job.spec, Job.error, Job.finished_at
    ).where(Job.id == job_id)
    row = session.execute(stmt).mappings().first()
    return dict(row) if row else None


def add(session: Session, values: dict[str, Any]) -> WebhookDelivery:
    delivery = WebhookDelivery(**values)
    session.add(delivery)
    return delivery


def get_any(session: Session, delivery_id: str) -> WebhookDelivery | None:
    """A delivery by id (the sender's lookup; deliveries are no tenant's API object yet)."""
    return session.get(WebhookDelivery, delivery_id, populate_existing=True)


def list_for_job(session: Session, tenant_id: str, job_id: str) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.job_id == job_id
    )
    return list(session.scalars(stmt.order_by(WebhookDelivery.created_at)))


def _claimable(now: datetime) -> Any:
    due = (WebhookDelivery.status == DeliveryStatus.pending) & (
        WebhookDelivery.next_attempt_at <= now
    )
    lapsed = (WebhookDelivery.status == DeliveryStatus.sending) & (
        WebhookDelivery.lease_expires_at < now
    )
    return or_(due, lapsed)


def due_ids(session: Session, now: datetime, limit: int) -> list[str]:
    """Deliveries to try now (pending and due, or claimed by a sender whose lease lapsed)."""
    stmt = select(WebhookDelivery.id).where(_claimable(now))
    return list(session.scalars(stmt.order_by(WebhookDelivery.next_attempt_at).limit(limit)))


def claim(session: Session, delivery_id: str, now: datetime, lease_seconds: float) -> int | None:
    """Take a due delivery for one attempt; returns its attempt number (None: someone else has
    it, or it is not due any more)."""
    stmt = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, _claimable(now))
        .values(
            status=DeliveryStatus.sending,
            attempts=WebhookDelivery.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            last_attempt_at=now,
            updated_at=utcnow(),
        )
        .returning(WebhookDelivery.attempts)
    )
    return session.execute(stmt).scalar_one_or_none()


def finish(session: Session, delivery_id: str, attempt: int, values: dict[str, Any]) -> bool:
    """Record an attempt's outcome, only if this attempt still owns the row."""
    stmt = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.sending,
            WebhookDelivery.attempts == attempt,
        )
        .values(**values, lease_expires_at=None, updated_at=utcnow())
    )
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
