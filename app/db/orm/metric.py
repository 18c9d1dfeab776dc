"""Durable Prometheus samples of the job metrics (`/metrics`, app/metrics/service.py).

Workers on any host move jobs to their terminal states, so their counters and histograms live
in the database, not in one process: each row is one sample, bumped with `value = value + x`
in the very transaction of the transition it counts (exactly once, even under concurrent
writers), and never derived from `job` rows, which retention and `DELETE /v1/jobs/{id}` remove.

- a counter: `name` is the sample name (`modelpress_jobs_total`), `labels` its label set;
- a histogram: `<family>_sum` rows, and `<family>_bucket` rows whose `labels` carry `le`, each
  the number of observations that fell into that one bucket (not cumulative: one observation
  bumps one bucket row); `/metrics` sums them into Prometheus' cumulative buckets and count.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class MetricSample(Base):
    __tablename__ = "metric_sample"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Canonical JSON of the label set (sorted keys), so that one series is one row.
    labels: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
