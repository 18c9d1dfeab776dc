"""Metric names, buckets and the API process's own metrics (`/metrics`).

Two sources feed `/metrics`:

- the job metrics (`modelpress_jobs_total`, job, step and queue-wait histograms) are durable rows
  in the database (app/metrics/), because workers on any host finish jobs;
- what happens in the API process itself, request durations and upload bytes, are
  prometheus-client metrics defined here. With several API processes (`MODELPRESS_API_WORKERS`)
  `PROMETHEUS_MULTIPROC_DIR` is set before they start (app/cli.py), every process writes its
  values there, and whichever process answers a scrape reads them all (multiprocess mode).
  prometheus-client picks the mode when it is first imported, from that variable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

JOBS_TOTAL = "modelpress_jobs_total"
JOBS_CURRENT = "modelpress_jobs_current"
JOB_DURATION = "modelpress_job_duration_seconds"
STEP_DURATION = "modelpress_step_duration_seconds"
QUEUE_WAIT = "modelpress_job_queue_wait_seconds"
HTTP_DURATION = "modelpress_http_request_duration_seconds"
UPLOAD_BYTES = "modelpress_upload_bytes_total"

INF = float("inf")
# Seconds. Jobs run from seconds (a dynamic quantization) to the sandbox's 30 min wall cap.
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, INF)
STEP_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, INF)
QUEUE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, INF)
HTTP_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 300.0, INF),  # uploads of large models stream for minutes
)
UPLOAD_KINDS = ("model", "dataset")

# The process's own registry; in multiprocess mode the values also go to the shared directory
# and the exposition reads that instead (MultiProcessCollector).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Histogram(
    HTTP_DURATION,
    "Time from a request's arrival to the end of its response, by route template and status "
    "(an event stream counts until it ends).",
    ["route", "status"],
    buckets=HTTP_BUCKETS,
    registry=PROCESS_REGISTRY,
)
UPLOADS = Counter(
    UPLOAD_BYTES,
    "Bytes of uploaded files received and stored to scratch, by kind (model or dataset).",
    ["kind"],
    registry=PROCESS_REGISTRY,
)
for _kind in UPLOAD_KINDS:
    UPLOADS.labels(kind=_kind)  # both series exist (at 0) before the first upload


def observe_request(route: str, status: int, seconds: float) -> None:
    """One finished HTTP request."""
    HTTP_REQUESTS.labels(route=route, status=str(status)).observe(seconds)


def count_upload(path: str, size_bytes: int) -> None:
    """An upload's file part, fully received (`path`: the request path, which names the kind)."""
    kind = "dataset" if path.startswith("/v1/datasets") else "model"
    UPLOADS.labels(kind=kind).inc(size_bytes)


def multiprocess_dir() -> str | None:
    """The shared directory of multiprocess mode, None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class _Process(Collector):
    """This process's metrics, or every API process's in multiprocess mode."""

    def collect(self) -> Iterator[Metric]:
        path = multiprocess_dir()
        if path is None:
            yield from PROCESS_REGISTRY.collect()
            return
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        yield from registry.collect()


def process_collector() -> Collector:
    """A collector of the API processes' metrics, for one scrape's registry."""
    return _Process()
