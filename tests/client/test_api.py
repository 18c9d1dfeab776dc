"""The httpx client against a scripted transport: problems become ApiError, waits end on terminal
states, downloads stream to disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.client import ApiError, Client, load_json_arg

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, api_key: str | None = None) -> Client:
    return Client("http://modelpress.test/", api_key, transport=httpx.MockTransport(handler))


def test_a_problem_answer_raises_api_error_with_its_body() -> None:
    problem = {"status": 404, "code": "not_found", "detail": "No job j."}
    client = _client(lambda request: httpx.Response(404, json=problem))

    with pytest.raises(ApiError) as caught:
        client.get("/v1/jobs/j")

    assert caught.value.status == 404
    assert caught.value.problem == problem
    assert str(caught.value) == "404 not_found: No job j."


def test_a_non_json_error_keeps_the_start_of_its_text() -> None:
    client = _client(lambda request: httpx.Response(502, text="bad gateway " * 100))

    with pytest.raises(ApiError) as caught:
        client.get("/healthz")

    assert caught.value.status == 502
    assert caught.value.problem == {"detail": ("bad gateway " * 100)[:500]}


def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"items": []})

    _client(handler, api_key="mp_k_s").get("/v1/models")

    assert seen == ["Bearer mp_k_s"]


def test_submit_sends_the_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "j", "status": "queued"})

    _client(handler).submit({"model_id": "m"}, idempotency_key="once")

    assert seen[0].headers["idempotency-key"] == "once"
    assert json.loads(seen[0].content) == {"model_id": "m"}


def test_wait_job_returns_the_terminal_job() -> None:
    client = _client(lambda request: httpx.Response(200, json={"id": "j", "status": "failed"}))

    job = client.wait_job("j")

    assert job["status"] == "failed"


def test_download_streams_the_body_to_a_new_folder(tmp_path: Path) -> None:
    client = _client(lambda request: httpx.Response(200, content=b"model bytes"))

    dest = client.download("/v1/jobs/j/artifacts/model.onnx", tmp_path / "out" / "model.onnx")

    assert dest.read_bytes() == b"model bytes"


def test_a_failed_download_raises_and_writes_nothing(tmp_path: Path) -> None:
    problem = {"status": 404, "code": "not_found", "detail": "No artifact."}
    client = _client(lambda request: httpx.Response(404, json=problem))

    with pytest.raises(ApiError) as caught:
        client.download("/v1/jobs/j/artifacts/x", tmp_path / "x")

    assert caught.value.problem["code"] == "not_found"
    assert not (tmp_path / "x").exists()


def test_json_arguments_are_inline_or_read_from_a_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"steps": [{"op": "quantize"}]}')

    assert load_json_arg('[{"op": "optimize"}]') == [{"op": "optimize"}]
    assert load_json_arg(f"@{spec}") == {"steps": [{"op": "quantize"}]}
