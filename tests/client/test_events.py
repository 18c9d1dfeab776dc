"""Following a job: SSE parsing and resuming against a small fake stream; the real app's stream
of a job, and the polling fallback for real against the app with its events route taken away
(a live job's stream over a real server: tests/integration/test_job_events.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.client import Client, JobEvent, parse_sse

SSE = "text/event-stream"


def _stream(text: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": SSE}, content=text.encode())


def test_sse_fields_are_parsed_by_the_event_stream_rules() -> None:
    text = (
        ": heartbeat\n"
        'event: status\nid: 1\ndata: {"status": "running"}\n\n'
        "event: log\ndata: first line\ndata: second line\n\n"  # no id: the last one holds
        'id: 3\r\nevent: progress\r\ndata:{"fraction": 0.5}\r\n\r\n'
        'event: step\ndata: {"index": 0}\n'  # cut off before its blank line: dropped
    )

    events = list(parse_sse(text.splitlines()))

    assert [(e.event, e.id) for e in events] == [("status", "1"), ("log", "1"), ("progress", "3")]
    assert events[0].data == {"status": "running"}
    assert events[1].data == {"text": "first line\nsecond line"}
    assert events[2].data == {"fraction": 0.5}


def test_an_event_without_data_is_not_dispatched() -> None:
    assert list(parse_sse(["event: status", "", "data: 1", ""])) == [
        JobEvent(event="message", data={"value": 1})
    ]


def test_a_dropped_stream_resumes_from_the_last_event_id() -> None:
    seen: list[str | None] = []
    answers = iter(
        [
            'event: status\nid: 1\ndata: {"status": "running"}\n\n'
            'event: progress\nid: 2\ndata: {"fraction": 0.4}\n\n',
            'event: verdict\nid: 3\ndata: {"met": true}\n\n'
            'event: status\nid: 4\ndata: {"status": "succeeded"}\n\n',
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        assert request.headers["accept"] == SSE
        return _stream(next(answers))

    api = Client("http://t", transport=httpx.MockTransport(handler), sleep=lambda s: None)

    events = list(api.events("j"))

    assert [(e.event, e.id) for e in events] == [
        ("status", "1"),
        ("progress", "2"),
        ("verdict", "3"),
        ("status", "4"),
    ]
    assert seen == [None, "2"]


def test_a_stream_that_keeps_ending_without_events_gives_up() -> None:
    api = Client(
        "http://t",
        transport=httpx.MockTransport(lambda request: _stream(": heartbeat\n\n")),
        sleep=lambda s: None,
    )

    with pytest.raises(httpx.RemoteProtocolError, match="kept ending"):
        list(api.events("j"))


def _scripted(answers: Iterator[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"status": 404, "code": "not_found"})
        if request.url.path.endswith("/report"):
            return httpx.Response(200, json={"verdict": {"met": False, "reasons": ["slow"]}})
        return httpx.Response(200, json=next(answers))

    return handler


def test_a_404_on_the_events_route_falls_back_to_polling_the_job() -> None:
    jobs: Iterator[dict[str, Any]] = iter(
        [
            {"id": "j", "status": "queued"},
            {"id": "j", "status": "running", "progress": {"fraction": 0.2, "message": "x"}},
            {"id": "j", "status": "succeeded", "progress": {"fraction": 1.0, "message": "done"}},
        ]
    )
    api = Client("http://t", transport=httpx.MockTransport(_scripted(jobs)), sleep=lambda s: None)
    follower = api.events("j")

    events = list(follower)

    assert follower.polling
    assert [e.event for e in events] == [
        "status",
        "progress",
        "status",
        "progress",
        "progress",
        "verdict",
        "status",
    ]
    assert events[-2].data["met"] is False
    assert events[-1].data["status"] == "succeeded"
    assert all(e.polled and e.id is None for e in events)


# ---------------------------------------------------------------- for real, against the server


def test_the_follower_reads_the_apps_event_stream_and_resumes_it(
    sse_api: Client, job: dict[str, Any]
) -> None:
    sse_api.cancel(job["id"])  # queued -> cancelled: three events, the stream then ends
    follower = sse_api.events(job["id"])

    events = list(follower)
    resumed = list(sse_api.events(job["id"], last_event_id="1"))

    assert follower.polling is False
    assert [(e.id, e.event) for e in events] == [("1", "status"), ("2", "log"), ("3", "status")]
    assert [e.data["status"] for e in events if e.event == "status"] == ["queued", "cancelled"]
    assert not any(e.polled for e in events)
    assert [e.id for e in resumed] == ["2", "3"]


def test_polling_follows_a_real_job_through_its_steps(
    api: Client, job: dict[str, Any], worker_script: Callable, finish_job: Callable
) -> None:
    api.sleep = worker_script(
        job["id"],
        [
            {"status": "running", "progress": {"fraction": 0.1, "message": "step 1/1: quantize"}},
            {"progress": {"fraction": 0.5, "message": "step 1/1: quantize", "step": 0}},
            {"progress": {"fraction": 0.9, "message": "measuring original vs optimized"}},
        ],
    )
    events: list[JobEvent] = []
    finished = False

    def on_event(event: JobEvent) -> None:
        nonlocal finished
        events.append(event)
        if event.data.get("fraction") == 0.9 and not finished:
            finish_job(job["id"], met=True)
            finished = True

    done = api.wait_job(job["id"], on_event=on_event)

    assert done.status == "succeeded"
    assert [e.event for e in events][:2] == ["status", "progress"]
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert [e.data for e in events if e.event == "step"] == [{"index": 0, "name": "quantize"}]
    assert [e.data for e in events if e.event == "verdict"] == [
        {"met": True, "reasons": [], "notes": []}
    ]


def test_polling_ends_with_the_failed_status_and_its_problem(
    api: Client, job: dict[str, Any], worker_script: Callable
) -> None:
    error = {"code": "pass_failed", "detail": "quantize broke"}
    api.sleep = worker_script(job["id"], [{"status": "failed", "error": error}])

    events = list(api.events(job["id"]))

    assert events[-1].event == "status"
    assert events[-1].data == {"status": "failed", "error": error}
    assert not any(e.event == "verdict" for e in events)


def test_the_follower_stops_at_the_terminal_status_even_if_the_stream_stays_open() -> None:
    class Open(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b'event: status\nid: 9\ndata: {"status": "cancelled"}\n\n'
            raise AssertionError("read past the terminal status")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": SSE}, stream=Open())

    api = Client("http://t", transport=httpx.MockTransport(handler))

    assert [e.data for e in api.events("j")] == [{"status": "cancelled"}]


def test_a_job_that_never_moves_times_out() -> None:
    jobs: Iterator[dict[str, Any]] = iter([{"id": "j", "status": "queued"}] * 3)
    api = Client("http://t", transport=httpx.MockTransport(_scripted(jobs)), sleep=lambda s: None)
    follower = api.events("j", timeout=60)
    follower.deadline = time.monotonic() - 1  # the minute is over

    with pytest.raises(TimeoutError, match="still not finished"):
        list(follower)
