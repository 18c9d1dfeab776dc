"""The httpx client against a scripted transport: problems become ApiError, waits end on terminal
states, downloads stream to disk, results are typed (and still read like the JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.client import (
    EXIT_BUDGET_MISSED,
    EXIT_FAILED,
    EXIT_MET,
    ApiError,
    Client,
    Job,
    Model,
    OptimizeResult,
    Report,
    RetryPolicy,
    UnsupportedByServer,
    Verdict,
    load_json_arg,
)

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


def test_submit_sends_a_fresh_idempotency_key_by_default() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "j", "status": "queued"})

    client = _client(handler)
    client.submit({"model_id": "m"})
    client.submit({"model_id": "m"})

    keys = [r.headers["idempotency-key"] for r in seen]
    assert len(set(keys)) == 2 and all(len(k) == 36 for k in keys)


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
    assert job.status == "failed" and job.terminal


def test_download_streams_the_body_to_a_new_folder(tmp_path: Path) -> None:
    client = _client(lambda request: httpx.Response(200, content=b"model bytes"))

    seen: list[tuple[int, int | None]] = []

    dest = client.download(
        "/v1/jobs/j/artifacts/model.onnx",
        tmp_path / "out" / "model.onnx",
        on_progress=lambda *p: seen.append(p),
    )

    assert dest.read_bytes() == b"model bytes"
    assert seen[0] == (0, 11) and seen[-1] == (11, 11)
    assert [p.name for p in dest.parent.iterdir()] == ["model.onnx"]  # no .part left


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


def test_a_cut_download_leaves_nothing_behind(tmp_path: Path) -> None:
    class Cut(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"half"
            raise httpx.ReadError("connection reset")

    client = _client(lambda request: httpx.Response(200, stream=Cut()))
    client.retry = RetryPolicy(attempts=1)

    with pytest.raises(httpx.ReadError):
        client.download("/v1/jobs/j/artifacts/model.onnx", tmp_path / "model.onnx")

    assert list(tmp_path.iterdir()) == []


def test_results_keep_fields_a_newer_server_adds() -> None:
    body = {"id": "j", "status": "running", "progress": {"fraction": 0.5, "eta_s": 3}, "new": 1}
    client = _client(lambda request: httpx.Response(200, json=body))

    job = client.get_job("j")

    assert job.progress.fraction == 0.5
    assert job.to_json()["new"] == 1 and job.progress.to_json()["eta_s"] == 3
    assert job.get("missing", "default") == "default"
    with pytest.raises(KeyError):
        job["missing"]


def test_logs_on_a_server_without_the_route_says_so_in_one_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            return httpx.Response(404, json={"status": 404, "code": "not_found"})
        return httpx.Response(200, json={"id": "j", "status": "running"})

    with pytest.raises(UnsupportedByServer) as caught:
        _client(handler).logs("j")

    assert str(caught.value) == (
        "this server has no job logs route (GET /v1/jobs/{id}/logs answered 404)"
    )


def test_logs_of_a_missing_job_is_the_jobs_own_404() -> None:
    problem = {"status": 404, "code": "not_found", "detail": "No job j."}
    client = _client(lambda request: httpx.Response(404, json=problem))

    with pytest.raises(ApiError) as caught:
        client.logs("j")

    assert not isinstance(caught.value, UnsupportedByServer)
    assert caught.value.problem == problem


def test_optimize_needs_exactly_one_of_steps_and_recipe(tmp_path: Path) -> None:
    client = _client(lambda request: httpx.Response(500))

    with pytest.raises(ValueError, match="exactly one"):
        client.optimize(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="exactly one"):
        client.optimize(tmp_path / "m.onnx", steps=[{"op": "quantize"}], recipe="auto")


@pytest.mark.parametrize(
    ("model", "job", "met", "code"),
    [
        ("ready", "succeeded", True, EXIT_MET),
        ("ready", "succeeded", None, EXIT_MET),
        ("ready", "succeeded", False, EXIT_BUDGET_MISSED),
        ("ready", "failed", None, EXIT_FAILED),
        ("ready", "cancelled", None, EXIT_FAILED),
        ("ready", "queued", None, EXIT_MET),  # not waited for
        ("rejected", None, None, EXIT_FAILED),
    ],
)
def test_an_optimize_result_has_the_cli_exit_code(
    model: str, job: str | None, met: bool | None, code: int
) -> None:
    result = OptimizeResult(
        model=Model(id="m", status=model),
        job=Job(id="j", status=job) if job else None,
        report=Report(verdict=Verdict(met=met)) if job == "succeeded" else None,
    )

    assert result.exit_code == code
