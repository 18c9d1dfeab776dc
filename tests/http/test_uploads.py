"""The streamed-upload dependency both upload routes share: the body is read last (after auth and
every other parameter), and nothing of it stays behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.core.config import get_settings
from app.main import create_app

ROUTES = ["/v1/models", "/v1/datasets"]


def _scratch(env: dict[str, str]) -> list[str]:
    scratch = Path(env["MODELPRESS_DATA_DIR"]) / "storage" / "scratch"
    return sorted(p.name for p in scratch.rglob("*")) if scratch.exists() else []


@pytest.fixture
def auth_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.mark.parametrize("route", ROUTES)
def test_an_upload_without_a_key_is_401_before_the_body_is_read(
    auth_client: Any, env: dict[str, str], route: str
) -> None:
    """A body the parser would refuse with a 400: the 401 shows that auth ran first."""
    response = auth_client.post(route, content=b"{}", headers={"content-type": "application/json"})

    assert_problem(response, 401, "unauthorized")
    assert _scratch(env) == []


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_that_is_not_multipart_is_400_and_leaves_no_scratch(
    client: Any, env: dict[str, str], route: str
) -> None:
    response = client.post(route, content=b"{}", headers={"content-type": "application/json"})

    assert_problem(response, 400, "bad_request")
    assert _scratch(env) == []


@pytest.mark.parametrize("route", ROUTES)
def test_a_form_without_a_file_part_is_422_missing_file(client: Any, route: str) -> None:
    response = client.post(route, files={"name": (None, "only a name")})

    assert_problem(response, 422, "missing_file")


@pytest.mark.parametrize("route", ROUTES)
def test_an_upload_over_the_limit_is_413_and_leaves_no_scratch(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    monkeypatch.setenv("MODELPRESS_MAX_UPLOAD_BYTES", "1024")
    get_settings.cache_clear()
    with TestClient(create_app()) as limited:
        response = limited.post(route, files={"file": ("f.bin", b"x" * 4096)})

    assert_problem(response, 413, "payload_too_large")
    assert _scratch(env) == []


def test_an_invalid_query_is_422_before_the_body_is_read(client: Any, env: dict[str, str]) -> None:
    """An empty file would be 422 empty_file: validation_error shows the body was never parsed."""
    response = client.post("/v1/models?wait=maybe", files={"file": ("m.onnx", b"")})

    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["pointer"] == "/query/wait"
    assert _scratch(env) == []
