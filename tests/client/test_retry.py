"""Retries: connection errors, 429 and 503 with `Retry-After`, bounded; never a second job or a
second upload where the first may have been taken."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from app.client import ApiError, Client, RetryPolicy
from app.client.retry import retry_after


class Script:
    """A transport answering from a list (a response, or an exception to raise)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers, self.requests = list(answers), list[httpx.Request]()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(script: Script, waits: list[float], **policy: float) -> Client:
    return Client(
        "http://t",
        transport=httpx.MockTransport(script),
        retry=RetryPolicy(**policy),  # type: ignore[arg-type]
        sleep=waits.append,
    )


OK = httpx.Response(200, json={"id": "m", "status": "ready"})
ACCEPTED = httpx.Response(202, json={"id": "j", "status": "queued"})


def _busy(status: int = 503, after: str | None = "2") -> httpx.Response:
    headers = {"Retry-After": after} if after is not None else {}
    return httpx.Response(status, headers=headers, json={"status": status, "code": "busy"})


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)

    assert retry_after(_busy(after="7")) == 7.0
    assert retry_after(_busy(after=date), now=now) == 30.0
    assert retry_after(_busy(after=format_datetime(now, usegmt=True)), now=now) == 0.0
    assert retry_after(_busy(after="soon")) is None
    assert retry_after(_busy(after=None)) is None


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_answer_is_retried_after_what_retry_after_says(status: int) -> None:
    waits: list[float] = []
    script = Script(_busy(status, "3"), _busy(status, "1"), OK)

    model = _client(script, waits).get_model("m")

    assert model.status == "ready"
    assert waits == [3.0, 1.0]
    assert len(script.requests) == 3


def test_without_retry_after_the_wait_backs_off_and_doubles() -> None:
    waits: list[float] = []
    script = Script(_busy(after=None), _busy(after=None), _busy(after=None), OK)

    _client(script, waits, backoff=1.0, max_backoff=3.0).get_model("m")

    # 1, 2, then capped at 3; each jittered to 50-100%.
    assert [0.5 <= w <= 1 for w in waits[:1]] == [True]
    assert 1.0 <= waits[1] <= 2.0
    assert 1.5 <= waits[2] <= 3.0


def test_attempts_are_bounded_and_the_last_answer_is_raised() -> None:
    waits: list[float] = []
    script = Script(*[_busy(after="0") for _ in range(3)])

    with pytest.raises(ApiError) as caught:
        _client(script, waits, attempts=3).get_model("m")

    assert caught.value.status == 503
    assert len(script.requests) == 3
    assert waits == [0.0, 0.0]


def test_a_retry_after_longer_than_the_policy_allows_is_not_waited_for() -> None:
    waits: list[float] = []
    script = Script(_busy(429, "3600"), OK)

    with pytest.raises(ApiError) as caught:
        _client(script, waits, max_retry_after=60).get_model("m")

    assert caught.value.status == 429
    assert waits == []


def test_a_get_is_retried_after_any_connection_error() -> None:
    waits: list[float] = []
    script = Script(httpx.ConnectError("refused"), httpx.ReadError("reset"), OK)

    assert _client(script, waits).get_model("m").id == "m"
    assert len(waits) == 2


def test_a_submit_carries_one_idempotency_key_across_its_retries() -> None:
    waits: list[float] = []
    script = Script(httpx.ReadTimeout("slow"), _busy(503, "0"), ACCEPTED)

    job = _client(script, waits).submit({"model_id": "m", "steps": [{"op": "quantize"}]})

    assert job.id == "j"
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1
    assert all(json.loads(r.content)["model_id"] == "m" for r in script.requests)


def test_a_submit_without_a_key_is_not_retried_once_it_may_have_arrived() -> None:
    waits: list[float] = []
    script = Script(httpx.ReadTimeout("slow"), ACCEPTED)

    with pytest.raises(httpx.ReadTimeout):
        _client(script, waits).submit({"model_id": "m"}, idempotent=False)

    assert "idempotency-key" not in script.requests[0].headers
    assert len(script.requests) == 1


def test_an_upload_is_retried_only_when_nothing_reached_the_server(tmp_path: Path) -> None:
    file = tmp_path / "m.onnx"
    file.write_bytes(b"x" * 1000)
    waits: list[float] = []
    script = Script(httpx.ConnectError("refused"), _busy(429, "1"), OK)
    progress: list[tuple[int, int | None]] = []

    model = _client(script, waits).upload_model(file, on_progress=lambda *p: progress.append(p))

    assert model.id == "m"
    assert len(script.requests) == 3
    assert all(r.content.count(b"x" * 1000) == 1 for r in script.requests[1:])
    assert progress[-1] == (1000, 1000)


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"), httpx.WriteError("w")],
)
def test_an_upload_is_not_retried_after_its_body_may_have_been_taken(
    tmp_path: Path, error: Exception
) -> None:
    file = tmp_path / "m.onnx"
    file.write_bytes(b"model")
    waits: list[float] = []
    script = Script(error, OK)

    with pytest.raises(type(error)):
        _client(script, waits).upload_model(file)

    assert len(script.requests) == 1


def test_cancel_is_retried_a_flag_set_twice_is_set_once() -> None:
    waits: list[float] = []
    script = Script(httpx.ReadError("reset"), ACCEPTED)

    assert _client(script, waits).cancel("j").status == "queued"
    assert len(script.requests) == 2


def test_the_real_rate_limit_is_honoured(limited_api: Client) -> None:
    waits: list[float] = []
    api = limited_api
    api.sleep = waits.append
    api.retry = RetryPolicy(attempts=2)

    for _ in range(3):
        api.list_models()
    with pytest.raises(ApiError) as caught:
        api.list_models()

    assert caught.value.status == 429
    assert len(waits) == 1 and 0 < waits[0] <= 60
