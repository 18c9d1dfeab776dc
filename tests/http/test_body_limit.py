"""The request-body cap, MODELPRESS_MAX_BODY_BYTES (RELIABILITY.md UP-02, API-08): a JSON body
over it is refused before FastAPI parses it, by Content-Length up front and by counting the
chunks of a chunked body; the multipart upload routes keep their own limit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.core.config import get_settings
from app.main import create_app

LIMIT = 4096


@pytest.fixture
def limited(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MODELPRESS_MAX_BODY_BYTES", str(LIMIT))
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        yield test_client


def _spec(size: int) -> bytes:
    """A job spec of exactly `size` bytes (its padding is a field the spec refuses)."""
    head = b'{"model_id": "m", "steps": [{"op": "quantize"}], "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


class _Asgi:
    """Drive the app with raw ASGI messages: a body in chunks, and what was sent back."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    def post(self, path: str, chunks: list[bytes], headers: dict[str, str]) -> int:
        async def receive() -> dict[str, Any]:
            if self.pulled >= len(chunks):
                raise AssertionError("the app read past the end of the body")
            self.pulled += 1
            more = self.pulled < len(chunks)
            return {"type": "http.request", "body": chunks[self.pulled - 1], "more_body": more}

        async def send(message: dict[str, Any]) -> None:
            self.sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        asyncio.run(self.app(scope, receive, send))
        return int(self.sent[0]["status"])

    def body(self) -> dict[str, Any]:
        return dict(json.loads(b"".join(m.get("body", b"") for m in self.sent[1:])))


def test_a_json_body_over_the_limit_is_413_by_content_length(limited: Any) -> None:
    response = limited.post(
        "/v1/jobs", content=_spec(LIMIT + 1), headers={"content-type": "application/json"}
    )

    body = assert_problem(response, 413, "payload_too_large")
    assert "MODELPRESS_MAX_BODY_BYTES" in body["detail"]


def test_a_chunked_json_body_over_the_limit_is_413(limited: Any) -> None:
    def chunks() -> Any:
        yield _spec(LIMIT + 1)

    response = limited.post(
        "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
    )

    assert_problem(response, 413, "payload_too_large")


def test_a_json_body_at_the_limit_is_parsed(limited: Any) -> None:
    response = limited.post(
        "/v1/jobs", content=_spec(LIMIT), headers={"content-type": "application/json"}
    )

    body = assert_problem(response, 422, "validation_error")
    assert "/pad" in {e["pointer"] for e in body["errors"]}


def test_a_declared_huge_body_is_refused_before_a_byte_is_read(env: dict[str, str]) -> None:
    """Unauthenticated, 5 GB declared: 413 at once; the app never pulls the body (or checks
    the key: the cap comes first)."""
    get_settings.cache_clear()
    asgi = _Asgi(create_app())
    headers = {"content-type": "application/json", "content-length": str(5 * 1024**3)}

    assert asgi.post("/v1/jobs", [b"{" * 1024], headers) == 413
    assert asgi.pulled == 0
    assert asgi.body()["code"] == "payload_too_large"


def test_a_chunked_body_stops_being_read_past_the_limit(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPRESS_MAX_BODY_BYTES", str(LIMIT))
    get_settings.cache_clear()
    asgi = _Asgi(create_app())
    chunks = [b" " * 1024] * 1000  # 1 MB of whitespace, no Content-Length

    assert asgi.post("/v1/jobs", chunks, {"content-type": "application/json"}) == 413
    assert asgi.pulled == LIMIT // 1024 + 1
    assert asgi.body()["code"] == "payload_too_large"
    assert [m["type"] for m in asgi.sent] == ["http.response.start", "http.response.body"]


@pytest.mark.parametrize("length", ["-1", "12abc", "1e9"])
def test_an_invalid_content_length_is_400(env: dict[str, str], length: str) -> None:
    get_settings.cache_clear()
    asgi = _Asgi(create_app())

    status = asgi.post("/v1/jobs", [b"{}"], {"content-length": length})

    assert (status, asgi.body()["code"]) == (400, "invalid_content_length")


def test_multipart_uploads_keep_their_own_limit(limited: Any) -> None:
    """A model upload larger than the JSON cap is not refused by it (its bytes are refused for
    not being a model, after they were streamed)."""
    response = limited.post("/v1/models", files={"file": ("m.onnx", b"\x00" * (4 * LIMIT))})

    assert response.status_code == 415, response.text


def test_a_multipart_body_elsewhere_gets_the_json_cap(limited: Any) -> None:
    """FastAPI would buffer any body of a JSON route: only the upload routes are exempt."""
    response = limited.post("/v1/jobs", files={"file": ("m.onnx", b"\x00" * (4 * LIMIT))})

    assert_problem(response, 413, "payload_too_large")


def test_bytes_that_are_not_utf8_are_a_documented_400(client: Any) -> None:
    response = client.post(
        "/v1/jobs", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )

    assert_problem(response, 400, "malformed_body")
    documented = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"400", "413", "422"} <= documented.keys()


def test_validation_errors_are_documented_as_problems(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operations = [op for ops in paths.values() for op in ops.values()]
    answers = [op["responses"]["422"] for op in operations if "422" in op["responses"]]

    assert answers
    for answer in answers:
        assert list(answer["content"]) == ["application/problem+json"]
