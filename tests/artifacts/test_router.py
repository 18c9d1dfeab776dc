"""`/v1/jobs/{id}/artifacts/{name}`, `/report` and `/report.html`: downloads through the database.
No worker runs here: the artifacts are stored and recorded the way the worker publishes them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from support import assert_problem

# ---------------------------------------------------------------- missing artifacts


@pytest.mark.parametrize("name", ["model.onnx", "report.json", "..%2F..%2Fetc%2Fpasswd"])
def test_unknown_artifact_is_404(client: Any, job: dict[str, Any], name: str) -> None:
    response = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")

    assert_problem(response, 404, "not_found")


def test_artifact_of_unknown_job_is_404(client: Any) -> None:
    response = client.get(f"/v1/jobs/{uuid.uuid4()}/artifacts/model.onnx")

    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("path", ["report", "report.html"])
def test_report_of_job_without_report_is_404(client: Any, job: dict[str, Any], path: str) -> None:
    response = client.get(f"/v1/jobs/{job['id']}/{path}")

    assert_problem(response, 404, "not_found")


# ---------------------------------------------------------------- stored artifacts


def test_artifact_downloads_its_stored_bytes(
    client: Any, job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    sha = store_artifact(job["id"], "model.onnx", b"\x08\x07onnx bytes", "application/octet-stream")

    response = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")

    assert response.status_code == 200, response.text
    assert response.content == b"\x08\x07onnx bytes"
    assert response.headers["etag"] == f'"{sha}"'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert 'filename="model.onnx"' in response.headers["content-disposition"]


def test_job_lists_its_stored_artifacts(
    client: Any, job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    store_artifact(job["id"], "report.html", b"<html></html>", "text/html")
    store_artifact(job["id"], "model.onnx", b"onnx", "application/octet-stream")

    body = client.get(f"/v1/jobs/{job['id']}").json()

    assert [(a["name"], a["kind"]) for a in body["artifacts"]] == [
        ("model.onnx", "model"),
        ("report.html", "report"),
    ]


def test_report_json_reads_back_in_the_report_shape(
    client: Any,
    job: dict[str, Any],
    store_artifact: Callable[..., str],
    report: Callable[[str], dict[str, Any]],
) -> None:
    document = report(job["id"])
    store_artifact(job["id"], "report.json", json.dumps(document).encode(), "application/json")

    response = client.get(f"/v1/jobs/{job['id']}/report")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job_id"] == job["id"]
    assert body["verdict"] == document["verdict"]
    assert body["baseline"]["latency_ms"]["1"]["p50"] == 0.5


def test_report_html_is_served_locked_down(
    client: Any, job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    page = "<!doctype html><title>report</title><p>ok</p>"
    store_artifact(job["id"], "report.html", page.encode(), "text/html")

    response = client.get(f"/v1/jobs/{job['id']}/report.html")

    assert response.status_code == 200, response.text
    assert response.text == page
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
