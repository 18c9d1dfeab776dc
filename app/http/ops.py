"""Operational routes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from app.core.health import readiness_checks
from app.http.deps import MetricsAccess, SessionDep, SettingsDep
from app.http.problems import Problem
from app.jobs.service import count_jobs_by_status

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database at the current schema, broker reachable")
def readyz(settings: SettingsDep) -> Response:
    checks = readiness_checks(settings)
    if all(checks.values()) and "schema_at_head" in checks:
        return Problem({"status": "ready", "checks": checks}, 200, media_type="application/json")
    body = {
        "type": "https://modelpress.dev/problems/not_ready",
        "title": "Not ready",
        "status": 503,
        "detail": "A dependency is down: " + ", ".join(k for k, v in checks.items() if not v),
        "code": "not_ready",
        "checks": checks,
    }
    return Problem(body, 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (needs a key when auth is on, unless MODELPRESS_METRICS_PUBLIC)",
    response_class=Response,
    dependencies=[MetricsAccess],
)
def metrics(session: SessionDep) -> Response:
    registry = CollectorRegistry()
    jobs = Gauge(
        "modelpress_jobs_total",
        "Jobs by status (from the database).",
        ["status"],
        registry=registry,
    )
    for status, count in count_jobs_by_status(session).items():
        jobs.labels(status=status).set(count)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
