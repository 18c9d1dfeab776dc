"""Operational routes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.core.health import readiness_checks
from app.http.deps import MetricsAccess, SessionDep, SettingsDep
from app.http.problems import Problem, problem_responses
from app.jobs.service import count_jobs_by_status
from app.metrics.service import exposition

router = APIRouter(tags=["operations"])


READY = {
    "description": "Every dependency answers and the schema is at the newest migration.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "description": "`ready`."},
                    "checks": {
                        "type": "object",
                        "description": "Each check by name (`database`, `schema_at_head`, "
                        "`broker`, ...): true when it passed.",
                        "additionalProperties": {"type": "boolean"},
                    },
                },
            },
            "example": {
                "status": "ready",
                "checks": {"database": True, "schema_at_head": True, "broker": True},
            },
        }
    },
}


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    """`{"status": "ok"}` while the process serves requests; it checks no dependency."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database at the current schema, broker reachable",
    responses={
        200: READY,
        **problem_responses(
            503, notes={503: "A check failed (`not_ready`); `checks` says which (false)."}
        ),
    },
)
def readyz(settings: SettingsDep) -> Response:
    """Whether this replica should get traffic: the database answers at the newest migration
    and the broker is reachable (a load balancer's probe)."""
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
    description="The Prometheus text format. Job counters and histograms come from the database "
    "(every API replica serves the same values: aggregate them with `max`, not `sum`); request "
    "durations and upload bytes are the API processes' own (every process of this server, in "
    "multiprocess mode). Names and labels: README, Production, Metrics.",
    response_class=Response,
    responses={
        200: {
            "description": "Every `modelpress_*` metric, in the Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **problem_responses(
            401,
            notes={
                401: "No valid key while MODELPRESS_AUTH_REQUIRED is on and "
                "MODELPRESS_METRICS_PUBLIC is off (`unauthorized`)."
            },
        ),
    },
    dependencies=[MetricsAccess],
)
def metrics(session: SessionDep) -> Response:
    body = exposition(session, count_jobs_by_status(session))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
