"""Operational routes: liveness, readiness, Prometheus metrics, the pass catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select, text

from app.core.config import get_settings
from app.db.migrate import is_at_head
from app.db.orm import Job
from app.db.session import get_engine
from app.http.deps import CurrentTenant, SessionDep
from app.http.problems import Problem
from app.passes.registry import REGISTRY

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _broker_ok(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


@router.get("/readyz", summary="Readiness: database at the current schema, broker reachable")
def readyz() -> Response:
    settings = get_settings()
    checks: dict[str, bool] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = True
        checks["schema_at_head"] = is_at_head(settings.resolved_database_url)
    except Exception:
        checks["database"] = False
    if settings.broker_url:
        checks["broker"] = _broker_ok(settings.broker_url)
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


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(session: SessionDep) -> Response:
    registry = CollectorRegistry()
    jobs = Gauge(
        "modelpress_jobs_total",
        "Jobs by status (from the database).",
        ["status"],
        registry=registry,
    )
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        jobs.labels(status=status).set(0)
    for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        jobs.labels(status=status).set(count)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/passes", summary="The technique catalog")
def list_passes(_tenant: CurrentTenant) -> dict[str, Any]:
    """Each op with its JSON schema (the step fields), formats and devices."""
    items = [
        {
            "name": p.name,
            "version": p.version,
            "summary": p.summary,
            "input_formats": list(p.input_formats),
            "output_format": p.output_format,
            "devices": list(p.devices),
            "schema": p.config_cls.model_json_schema(),
        }
        for p in REGISTRY.all()
    ]
    return {"items": items, "next_cursor": None}
