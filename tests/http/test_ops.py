"""Operational routes, the offline docs page, the pass catalog and the problem handlers."""

from __future__ import annotations

import json
import re
from importlib import metadata
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.main import create_app


def _asset_urls(html: str) -> list[str]:
    """Every URL the page's <script> and <link> tags load."""
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html, flags=re.IGNORECASE)
    return [m for tag in tags for m in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', tag)]


# ---------------------------------------------------------------- liveness and readiness


def test_healthz_is_ok(client: Any) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_schema(client: Any) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["checks"]["database"] is True
    assert response.json()["checks"]["schema_at_head"] is True


def test_metrics_expose_jobs_total_and_the_jobs_by_status(client: Any) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert re.search(r"^# TYPE modelpress_jobs_total counter$", response.text, re.M)
    assert re.search(r'^modelpress_jobs_current\{status="queued"\} 0\.0$', response.text, re.M)


# ---------------------------------------------------------------- OpenAPI and docs


def test_openapi_lists_the_v1_routes(client: Any) -> None:
    response = client.get("/openapi.json")

    schema = json.loads(response.text)
    assert {"/v1/models", "/v1/jobs", "/v1/datasets", "/v1/passes"} <= schema["paths"].keys()


def test_openapi_carries_the_installed_version(client: Any) -> None:
    schema = client.get("/openapi.json").json()

    assert schema["info"]["version"] == metadata.version("modelpress")


def test_openapi_declares_the_problem_schema(client: Any) -> None:
    schema = client.get("/openapi.json").json()

    problem = schema["components"]["schemas"]["ProblemDetail"]
    assert {"type", "title", "status", "code"} <= set(problem["required"])


def test_openapi_routes_point_errors_at_the_problem_schema(client: Any) -> None:
    schema = client.get("/openapi.json").json()

    not_found = schema["paths"]["/v1/models/{model_id}"]["get"]["responses"]["404"]
    ref = not_found["content"]["application/problem+json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ProblemDetail"


def test_docs_page_loads_nothing_from_the_network(client: Any) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = _asset_urls(response.text)
    assert urls, "the docs page loads its script and stylesheet"
    assert all(u.startswith("/static/docs/") for u in urls), urls
    assert not re.search(r"<(script|link)\b[^>]*https?://", response.text, re.I)


def test_docs_assets_are_served_locally(client: Any) -> None:
    urls = _asset_urls(client.get("/docs").text)

    responses = {u: client.get(u) for u in urls}

    assert {u: r.status_code for u, r in responses.items()} == dict.fromkeys(urls, 200)
    assert all(len(r.content) > 0 for r in responses.values())


def test_docs_page_reads_the_local_openapi(client: Any) -> None:
    response = client.get("/docs")

    assert "'/openapi.json'" in response.text or '"/openapi.json"' in response.text


# ---------------------------------------------------------------- the pass catalog


def test_passes_list_quantize_and_optimize_with_schemas(client: Any) -> None:
    response = client.get("/v1/passes")

    passes = {p["name"]: p for p in response.json()["items"]}
    assert {"quantize", "optimize"} <= passes.keys()
    for name in ("quantize", "optimize"):
        schema = passes[name]["schema"]
        assert schema["type"] == "object"
        assert schema["properties"]["op"]["const"] == name
        assert schema["additionalProperties"] is False


def test_passes_declare_formats_and_devices(client: Any) -> None:
    response = client.get("/v1/passes")

    quantize = next(p for p in response.json()["items"] if p["name"] == "quantize")
    assert "onnx" in quantize["input_formats"]
    assert "cpu" in quantize["devices"]


# ---------------------------------------------------------------- problem handlers


def test_unknown_route_is_404_problem(client: Any) -> None:
    response = client.get("/v1/nothing-here")

    assert_problem(response, 404, "not_found")


def test_wrong_method_is_405_problem(client: Any) -> None:
    response = client.put("/v1/models")

    assert_problem(response, 405, "method_not_allowed")


@pytest.fixture
def crashing_client(env: dict[str, str]) -> Any:
    """A fresh app with one extra route that fails unexpectedly."""
    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret at /srv/modelpress/app.py: SELECT * FROM api_key")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_unexpected_error_is_500_problem_with_request_id_only(crashing_client: Any) -> None:
    """API-07: a 500 says only that it failed and under which request id."""
    response = crashing_client.get("/boom")

    body = assert_problem(response, 500, "internal_error")
    assert re.fullmatch(r"[0-9a-f]{32}", body["instance"])
    assert body["instance"] in body["detail"]
    for leak in ("secret", "Traceback", "RuntimeError", "/srv/", "SELECT", "app.py"):
        assert leak not in response.text
        assert leak not in str(response.headers)
