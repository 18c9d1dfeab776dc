"""Following a job: its server-sent events, or polling where the server has no events route.

`GET /v1/jobs/{id}/events` (PRODUCT.md, "Events") is `text/event-stream` with the event names
`status`, `step`, `progress`, `log` and `verdict`, an `id` that increases per job, a comment
line as heartbeat, and the end of the stream after the terminal `status`. A dropped stream is
resumed with `Last-Event-ID`. A server that answers the route 404 (or 405/501) is followed by
polling `GET /v1/jobs/{id}` instead, which yields the same event names (`id` None, `polled`
True; no `log` events: a polled job has no log lines), the terminal `status` last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from app.client.errors import ApiError
from app.client.models import TERMINAL, JobEvent

if TYPE_CHECKING:
    from app.client.api import Client

NO_EVENTS_ROUTE = (404, 405, 501)


def parse_sse(lines: Iterable[str]) -> Iterator[JobEvent]:
    """Events from the lines of an event stream (the WHATWG rules: `event`, `data` lines joined
    by newlines, `id` kept until changed, a blank line dispatches, `:` comments skipped, an
    unfinished last event dropped)."""
    name, data, last_id = "", list[str](), None
    for line in lines:
        if not line:
            if data:
                yield _event(name or "message", "\n".join(data), last_id)
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value or None


def _event(name: str, text: str, event_id: str | None) -> JobEvent:
    try:
        data = json.loads(text)
    except ValueError:
        data = {"text": text}
    if not isinstance(data, dict):
        data = {"value": data}
    return JobEvent(event=name, data=data, id=event_id)


def is_terminal(event: JobEvent) -> bool:
    return event.event == "status" and event.data.get("status") in TERMINAL


class Follower:
    """Iterate a job's events until its terminal `status`: SSE, resumed when the stream drops
    (at most `reconnects` times in a row without a new event), or the polling fallback. A
    `timeout` (seconds) raises `TimeoutError`, checked at each event and each poll."""

    def __init__(
        self,
        client: Client,
        job_id: str,
        *,
        poll_interval: float = 1.0,
        reconnects: int = 5,
        last_event_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float | None = None,
    ) -> None:
        self.client, self.job_id, self.poll_interval = client, job_id, poll_interval
        self.reconnects, self.last_event_id, self.sleep = reconnects, last_event_id, sleep
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.polling = False

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError(f"job {self.job_id} is still not finished")

    def __iter__(self) -> Iterator[JobEvent]:
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            response = self.client.send("GET", self._path, headers=headers, stream=True)
            kind = response.headers.get("content-type", "")
            ok = response.status_code < 400 and kind.startswith("text/event-stream")
            if response.status_code in NO_EVENTS_ROUTE or (response.status_code < 400 and not ok):
                # No events route here (an older server, or a catch-all page answering 200).
                response.close()
                self.polling = True
                yield from self.poll()
                return
            self.client.check(response)
            got, done = yield from self._read(response)
            if done:
                return
            failures = 0 if got else failures + 1
            if failures >= self.reconnects:
                raise httpx.RemoteProtocolError(f"job {self.job_id}: the event stream kept ending")
            self.sleep(min(30.0, 0.5 * 2**failures))

    @property
    def _path(self) -> str:
        return f"/v1/jobs/{self.job_id}/events"

    def _read(self, response: httpx.Response) -> Generator[JobEvent, None, tuple[bool, bool]]:
        """Yield the stream's events; return (any event seen, terminal status seen)."""
        got = False
        try:
            for event in parse_sse(response.iter_lines()):
                got = True
                self._check_deadline()
                if event.id is not None:
                    self.last_event_id = event.id
                yield event
                if is_terminal(event):
                    return True, True  # the last event: no need to wait for the stream's end
        except httpx.TransportError:
            pass  # a dropped stream: resumed from the last id
        finally:
            response.close()
        return got, False

    def poll(self) -> Iterator[JobEvent]:
        """The fallback: `GET /v1/jobs/{id}` every `poll_interval`, changes as events."""
        status = step = None
        progress: dict[str, Any] | None = None
        while True:
            job = self.client.get_job(self.job_id)
            if job.status != status and not job.terminal:
                status = job.status
                yield JobEvent(event="status", data={"status": status}, polled=True)
            now = job.progress.to_json()
            if job.progress.step is not None and job.progress.step != step:
                step = job.progress.step
                name = job.progress.message.rpartition(": ")[2]
                yield JobEvent(event="step", data={"index": step, "name": name}, polled=True)
            if now != progress:
                progress = now
                yield JobEvent(event="progress", data=now, polled=True)
            if job.terminal:
                yield from self._verdict(job.status)
                data = {"status": job.status, "error": job.error}
                yield JobEvent(event="status", data=data, polled=True)
                return
            self._check_deadline()
            self.sleep(self.poll_interval)

    def _verdict(self, status: str) -> Iterator[JobEvent]:
        if status != "succeeded":
            return
        try:
            report = self.client.get_report(self.job_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return  # a succeeded job without a report (an older worker): no verdict to tell
        yield JobEvent(event="verdict", data=report.verdict.to_json(), polled=True)
