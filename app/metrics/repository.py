"""Every query on `metric_sample`: atomic increments and the scrape's read."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.orm import MetricSample

SampleKey = tuple[str, str]  # (sample name, canonical label JSON)


def increment(session: Session, deltas: Mapping[SampleKey, float]) -> None:
    """Add each delta to its sample (created at the delta) in the caller's transaction.

    One `INSERT ... ON CONFLICT DO UPDATE SET value = value + excluded.value`: concurrent
    writers each add their own delta (Postgres locks the row, SQLite has one writer), and the
    rows are written in sorted order so that two transactions never wait on each other in a
    cycle.
    """
    if not deltas:
        return
    now = utcnow()
    rows = [
        {"name": name, "labels": labels, "value": float(delta), "updated_at": now}
        for (name, labels), delta in sorted(deltas.items())
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(MetricSample).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[MetricSample.name, MetricSample.labels],
        set_={
            "value": MetricSample.value + stmt.excluded.value,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    session.execute(stmt)


def all_samples(session: Session) -> list[tuple[str, str, float]]:
    """Every stored sample as (name, label JSON, value)."""
    stmt = select(MetricSample.name, MetricSample.labels, MetricSample.value).order_by(
        MetricSample.name, MetricSample.labels
    )
    return [(name, labels, float(value)) for name, labels, value in session.execute(stmt)]
