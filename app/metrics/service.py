"""The job metrics: recorded with the transitions they count, rendered for `/metrics`.

- `record_queue_wait`: at a job's first claim, in the claim's transaction.
- `record_terminal`: right after a transition to a terminal state succeeded, in its
  transaction (the worker's final transitions, the reaper, the API's cancel of a queued job),
  so a job is counted exactly once, however many processes race for it.
- `exposition`: the Prometheus text of one scrape: these durable families, the current jobs
  by status, and the API processes' own metrics (app/core/metrics.py).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import metrics as names
from app.db.base import seconds_between
from app.db.orm import Job
from app.db.orm.job import TERMINAL
from app.metrics import repository
from app.metrics.repository import SampleKey
from app.passes.registry import CATALOG

MAX_STEPS = 1000  # steps observed per job (`recipe: auto` runs several candidates)
OP_LABEL_MAX = 200

# family -> (help, label names, buckets)
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    names.JOB_DURATION: (
        "Seconds from the start of a job's last attempt to its terminal state, by op "
        "(jobs cancelled before they ran are not observed).",
        ("op",),
        names.JOB_BUCKETS,
    ),
    names.STEP_DURATION: (
        "Wall seconds of each step a succeeded job ran, by technique (`prune.channel`, "
        "`quantize`, ...; implicit conversions and every `recipe: auto` candidate's steps "
        "included).",
        ("op",),
        names.STEP_BUCKETS,
    ),
    names.QUEUE_WAIT: (
        "Seconds from a job's submission to its first start on a worker, by op.",
        ("op",),
        names.QUEUE_BUCKETS,
    ),
}
JOBS_HELP = "Jobs that reached a terminal state, by status and op (ops joined by `+`, or `auto`)."
JOBS_LABELS = ("op", "status")
StepTiming = tuple[str, float]


def job_op(spec: Mapping[str, Any] | None) -> str:
    """The `op` label of a job: its steps' ops joined by `+` (`prune+distill+quantize`), or
    `auto` for `recipe: auto`."""
    spec = spec or {}
    if spec.get("recipe"):
        return str(spec["recipe"])
    ops = "+".join(str(step.get("op", "?")) for step in spec.get("steps") or [])
    return ops[:OP_LABEL_MAX] or "none"


def _labels(**values: str) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def _observe(deltas: dict[SampleKey, float], family: str, value: float, **labels: str) -> None:
    """Add one observation to `deltas`: one bucket row and the sum."""
    buckets = HISTOGRAMS[family][2]
    value = max(0.0, value)
    le = next(b for b in buckets if value <= b)
    bucket = (f"{family}_bucket", _labels(**labels, le=floatToGoString(le)))
    deltas[bucket] = deltas.get(bucket, 0.0) + 1
    total = (f"{family}_sum", _labels(**labels))
    deltas[total] = deltas.get(total, 0.0) + value


def record_queue_wait(session: Session, job_id: str) -> None:
    """Observe the job's wait from submission to this (first) start; call in the claim's
    transaction, only for attempt 1."""
    stmt = select(Job.spec, Job.created_at, Job.started_at).where(Job.id == job_id)
    row = session.execute(stmt).first()
    waited = seconds_between(row.created_at, row.started_at) if row else None
    if row is None or waited is None:
        return
    deltas: dict[SampleKey, float] = {}
    _observe(deltas, names.QUEUE_WAIT, waited, op=job_op(row.spec))
    repository.increment(session, deltas)


def record_terminal(session: Session, job_id: str, steps: Sequence[StepTiming] = ()) -> None:
    """Count the job's terminal state and observe its duration (and `steps`, the wall time of
    each step of a succeeded job); call right after the transition succeeded, in its
    transaction."""
    stmt = select(Job.status, Job.spec, Job.started_at, Job.finished_at).where(Job.id == job_id)
    row = session.execute(stmt).first()
    if row is None or row.status not in TERMINAL:
        return
    op = job_op(row.spec)
    deltas: dict[SampleKey, float] = {(names.JOBS_TOTAL, _labels(op=op, status=row.status)): 1}
    ran = seconds_between(row.started_at, row.finished_at)
    if ran is not None:
        _observe(deltas, names.JOB_DURATION, ran, op=op)
    for step_op, seconds in steps:
        _observe(deltas, names.STEP_DURATION, seconds, op=step_op)
    repository.increment(session, deltas)


def step_timings(records: Iterable[Mapping[str, Any]]) -> list[StepTiming]:
    """(technique, wall seconds) of each finished step among the sandboxed child's progress
    records (`{"kind": "step", "phase": "finished", "op", "wall_s"}`, worker/sandbox/
    progress.py), read as hostile: unknown techniques and bad numbers are skipped, and at most
    `MAX_STEPS` are taken."""
    known = set(CATALOG.names())
    timings: list[StepTiming] = []
    for record in records:
        if len(timings) >= MAX_STEPS:
            break
        if not isinstance(record, Mapping) or record.get("kind") != "step":
            continue
        op, seconds = record.get("op"), record.get("wall_s")
        if record.get("phase") != "finished" or op not in known:
            continue
        if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0:
            timings.append((str(op), float(seconds)))
    return timings


class _Durable(Collector):
    """The job families from `metric_sample`, plus the current jobs by status."""

    def __init__(self, session: Session, job_counts: Mapping[str, int]) -> None:
        self.session, self.job_counts = session, job_counts

    def collect(self) -> Iterator[Metric]:
        samples = repository.all_samples(self.session)
        jobs = CounterMetricFamily(names.JOBS_TOTAL, JOBS_HELP, labels=JOBS_LABELS)
        for name, labels, value in samples:
            if name == names.JOBS_TOTAL:
                values = json.loads(labels)
                jobs.add_metric([values.get(k, "") for k in JOBS_LABELS], value)
        yield jobs
        for family, (help_text, label_names, buckets) in HISTOGRAMS.items():
            yield _histogram(family, help_text, label_names, buckets, samples)
        current = GaugeMetricFamily(
            names.JOBS_CURRENT,
            "Jobs in the database now, by current status (deleted and expired jobs leave it).",
            labels=["status"],
        )
        for status, count in sorted(self.job_counts.items()):
            current.add_metric([str(status)], count)
        yield current


def _histogram(
    family: str,
    help_text: str,
    label_names: tuple[str, ...],
    buckets: tuple[float, ...],
    samples: list[tuple[str, str, float]],
) -> HistogramMetricFamily:
    """Cumulative Prometheus buckets from the stored per-bucket counts (a stored bound that is
    no longer configured folds into the next configured one)."""
    counts: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0] * len(buckets))
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for name, labels, value in samples:
        if name not in (f"{family}_bucket", f"{family}_sum"):
            continue
        values = json.loads(labels)
        key = tuple(str(values.get(k, "")) for k in label_names)
        if name.endswith("_sum"):
            sums[key] += value
            continue
        bound = float(values.get("le", "+Inf"))
        counts[key][next(i for i, b in enumerate(buckets) if bound <= b)] += value
    metric = HistogramMetricFamily(family, help_text, labels=label_names)
    for key in sorted(counts.keys() | sums.keys()):
        running, cumulative = 0.0, []
        for bound, count in zip(buckets, counts[key], strict=True):
            running += count
            cumulative.append((floatToGoString(bound), running))
        metric.add_metric(list(key), cumulative, sum_value=sums[key])
    return metric


def exposition(session: Session, job_counts: Mapping[str, int]) -> bytes:
    """The Prometheus text format of one scrape."""
    registry = CollectorRegistry()
    registry.register(_Durable(session, job_counts))
    registry.register(names.process_collector())
    return bytes(generate_latest(registry))
