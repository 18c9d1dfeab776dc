"""create_app(): the FastAPI application (no torch, onnx or onnxruntime is imported here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.artifacts.router import router as artifacts_router
from app.core.config import get_settings
from app.core.logging import configure_logging
from app.core.ratelimit import build_rate_limiter
from app.datasets.router import router as datasets_router
from app.db.migrate import upgrade_head
from app.http.body_limit import BodyLimitMiddleware
from app.http.deps import limit_sessions
from app.http.docs import document_openapi, install_docs, operation_id
from app.http.metrics import RequestMetricsMiddleware
from app.http.ops import router as ops_router
from app.http.page import install_page
from app.http.problems import install_problem_handlers
from app.jobs.router import router as jobs_router
from app.ml_models.router import router as models_router
from app.passes.router import router as passes_router

DESCRIPTION = """
Upload a trained network (ONNX, TorchScript or `.pt2`), submit an optimization job, download the
optimized model and an honest report (size, latency p50/p90/p99 per batch size, fidelity of the
outputs) measured side by side with the original in one run.

Errors are RFC 9457 `application/problem+json` with a machine `code`.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    limit_sessions(app.state, settings)  # no more sessions than connections (app/http/deps.py)
    if settings.auto_migrate:
        await run_in_threadpool(upgrade_head, settings.resolved_database_url)
    yield


def create_app() -> FastAPI:
    """The API: routers, problem handlers, offline docs."""
    configure_logging()
    app = FastAPI(
        title="ModelPress",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.rate_limiter = build_rate_limiter(get_settings())  # per app: tests get their own
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=lambda: get_settings().max_body_bytes,
        upload_paths=(models_router.prefix, datasets_router.prefix),
    )
    # Outermost: request durations include the body-limit refusals (app/http/metrics.py).
    app.add_middleware(RequestMetricsMiddleware, routes=lambda: app.routes)
    install_docs(app)
    install_page(app)  # `/`: the read-only jobs page
    routers = (models_router, datasets_router, jobs_router, artifacts_router, passes_router)
    for router in (*routers, ops_router):
        app.include_router(router)
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            document_openapi(schema)
        return app.openapi_schema or schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
