"""`/docs` that works offline, and what the generated OpenAPI says beyond the routes' own words:
the problem answers every route has, stable operation ids (a generated client's names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.http.problems import PROBLEM_SCHEMA, problem_response

ASSETS = Path(fastapi_offline.__file__).parent / "static"


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI `operationId`: its function's name (`submit_job`, `get_report`), so a
    client generated from `/openapi.json` has short names that do not change with the path."""
    return route.name


def install_docs(app: FastAPI) -> None:
    """Mount the bundled Swagger UI (v5, OpenAPI 3.1) at `/docs`; nothing loads from a CDN."""
    app.mount("/static/docs", StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="ModelPress API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        )


def _operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, operation)
        for path, operations in schema.get("paths", {}).items()
        for operation in operations.values()
        if isinstance(operation, dict)
    ]


def document_validation_problems(schema: dict[str, Any]) -> None:
    """Point FastAPI's generated 422 answers at the problem+json they really are (in place),
    and drop FastAPI's own validation-error schemas, which no answer has then."""
    for _path, operation in _operations(schema):
        responses = operation.get("responses", {})
        if "422" in responses:
            responses["422"] = problem_response(422)
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)


def document_rate_limit(schema: dict[str, Any]) -> None:
    """Every `/v1` operation may answer 429 (MODELPRESS_RATE_LIMIT_PER_MINUTE): say so."""
    for path, operation in _operations(schema):
        if path.startswith("/v1/"):
            operation.setdefault("responses", {}).setdefault("429", problem_response(429))


def document_auth(schema: dict[str, Any]) -> None:
    """Every `/v1` operation needs a key when MODELPRESS_AUTH_REQUIRED is on: 401 without one."""
    for path, operation in _operations(schema):
        if path.startswith("/v1/"):
            operation.setdefault("responses", {}).setdefault("401", problem_response(401))


def document_body_limit(schema: dict[str, Any]) -> None:
    """The body-limit middleware answers every route: 400 for an invalid Content-Length, 413
    for a body over MODELPRESS_MAX_BODY_BYTES (routes that read a body say more)."""
    notes = {
        400: "Invalid Content-Length (`invalid_content_length`).",
        413: "A body over MODELPRESS_MAX_BODY_BYTES (`payload_too_large`).",
    }
    for _path, operation in _operations(schema):
        responses = operation.setdefault("responses", {})
        for status, note in notes.items():
            responses.setdefault(str(status), problem_response(status, note))


def document_problems(schema: dict[str, Any]) -> None:
    """Everything the generated OpenAPI says about problems (in place): the ProblemDetail
    schema, 422 as problem+json, and the answers every route (or every `/v1` route) has."""
    schema.setdefault("components", {}).setdefault("schemas", {})["ProblemDetail"] = PROBLEM_SCHEMA
    document_validation_problems(schema)
    document_auth(schema)
    document_rate_limit(schema)
    document_body_limit(schema)


# What the path and query parameters that many routes share mean (a route's own description of
# a parameter wins).
PARAMETERS = {
    "model_id": "A model's id, as `POST /v1/models` answered it.",
    "dataset_id": "A dataset's id, as `POST /v1/datasets` answered it.",
    "job_id": "A job's id, as `POST /v1/jobs` answered it.",
    "name": "An artifact's name, as the job's `artifacts[].name` lists it (`report.json`).",
    "limit": "Items per page.",
    "cursor": "The previous page's `next_cursor`; none for the first page.",
    "status": "Only jobs in this status.",
}


def document_parameters(schema: dict[str, Any]) -> None:
    """Describe the shared parameters (`job_id`, `limit`, `cursor`...) where a route did not."""
    for _path, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            text = PARAMETERS.get(parameter.get("name", ""))
            if text and not parameter.get("description"):
                parameter["description"] = text


def document_openapi(schema: dict[str, Any]) -> None:
    """What the generated OpenAPI says beyond the routes (in place): problems, parameters."""
    document_problems(schema)
    document_parameters(schema)
