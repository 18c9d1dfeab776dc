"""What the sandbox child tells its supervisor while it works: JSON lines appended to
`progress.jsonl` in its scratch, read back at each supervisor tick.

Three kinds of record: progress (`fraction`, `message`, `step`; no `kind`, as from the start),
`{"kind": "step", ...}` when a step starts and finishes, and `{"kind": "log", ...}` for the
child's own log records (the `LogLines` handler). The file is written by a process that runs an
uploaded model, so the supervisor side (`Relay`) validates each record, bounds every field and
caps how many become job events (`app/jobs/events.py`); the rest is dropped with one note.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.jsonl"
LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_LOG_EVENTS = 2000  # the child's log lines kept per attempt (a job's log is for people)
MAX_STEP_EVENTS = 1000  # step events kept per attempt (`recipe: auto` runs many candidates)
MESSAGE_CHARS = 2000
NAME_CHARS = 100


class Progress:
    """The child's side: append one record per call (open, write, close: nothing is lost when
    the child is killed a moment later)."""

    def __init__(self, scratch: Path) -> None:
        self.path = scratch / PROGRESS_FILE

    def _write(self, record: dict[str, Any]) -> None:
        record["ts"] = time.time()
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def emit(self, fraction: float, message: str, step: int | None = None) -> None:
        event: dict[str, Any] = {
            "fraction": round(min(max(fraction, 0.0), 1.0), 4),
            "message": message,
        }
        if step is not None:
            event["step"] = step
        self._write(event)

    def step(self, index: int, op: str, phase: str, wall_s: float | None = None) -> None:
        """A step `started` or `finished` (with its wall time)."""
        record: dict[str, Any] = {"kind": "step", "index": index, "op": op, "phase": phase}
        if wall_s is not None:
            record["wall_s"] = round(wall_s, 4)
        self._write(record)

    def log(self, level: str, logger: str, message: str) -> None:
        self._write({"kind": "log", "level": level, "logger": logger, "message": message})


class LogLines(logging.Handler):
    """The child's log records as `log` records of the progress file: the pipeline's own
    (`worker.*`) from INFO, any other library's from WARNING (warnings included)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not record.name.startswith("worker"):
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.progress.log(record.levelname.lower(), record.name, message)
        except Exception:  # a log line must never break the job
            self.handleError(record)


def install_log_lines(scratch: Path) -> LogLines:
    """Route the child's logging (and `warnings`) into its progress file."""
    handler = LogLines(Progress(scratch))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    logging.captureWarnings(True)
    return handler


# ---------------------------------------------------------------- the supervisor's side


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split("\n")).strip()
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _index(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 100_000:
        return None
    return value


def parse_progress(record: dict[str, Any]) -> dict[str, Any] | None:
    """A progress record as the job's `progress` (fraction, message, step), or None."""
    fraction = _number(record.get("fraction"))
    message = _text(record.get("message", ""), 300)
    if fraction is None or message is None:
        return None
    progress: dict[str, Any] = {"fraction": round(min(max(fraction, 0.0), 1.0), 4)}
    progress["message"] = message
    step = _index(record.get("step"))
    if step is not None:
        progress["step"] = step
    return progress


def parse_step(record: dict[str, Any]) -> dict[str, Any] | None:
    index, op = _index(record.get("index")), _text(record.get("op"), NAME_CHARS)
    phase = record.get("phase")
    if index is None or not op or phase not in ("started", "finished"):
        return None
    data: dict[str, Any] = {"index": index, "op": op, "name": op, "phase": phase}
    wall = _number(record.get("wall_s"))
    if phase == "finished" and wall is not None and wall >= 0:
        data["wall_s"] = round(wall, 4)
    return data


def parse_log(record: dict[str, Any], since: float = 0.0) -> dict[str, Any] | None:
    """A log record as a `log` event's data; its time (`ts`, epoch seconds) is the child's,
    kept between `since` (the attempt's start) and now."""
    message = _text(record.get("message"), MESSAGE_CHARS)
    if not message:
        return None
    level = record.get("level")
    logger = _text(record.get("logger", ""), NAME_CHARS) or ""
    now, ts = time.time(), _number(record.get("ts"))
    return {
        "message": message,
        "source": "job",
        "level": level if level in LEVELS else "info",
        **({"logger": logger} if logger else {}),
        "ts": min(max(ts if ts is not None else now, since), now),
    }


class Relay:
    """Turns the child's records into job events, in their order, bounded: progress only when
    it changed since the last one sent (and only the latest of those waiting), steps and log
    lines up to their caps. `pending()` is what to write next; `sent()` once it committed."""

    def __init__(self) -> None:
        self.since = time.time()
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._sent_progress: dict[str, Any] | None = None
        self.latest_progress: dict[str, Any] | None = None
        self.logs = self.steps = 0
        self._dropped_noted = False

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if not isinstance(record, dict):
                continue
            kind = record.get("kind")
            if kind is None:
                self._progress(record)
            elif kind == "step":
                data = parse_step(record)
                if data is not None and self.steps < MAX_STEP_EVENTS:
                    self.steps += 1
                    self._pending.append(("step", data))
            elif kind == "log":
                data = parse_log(record, self.since)
                if data is None:
                    continue
                if self.logs < MAX_LOG_EVENTS:
                    self.logs += 1
                    self._pending.append(("log", data))
                elif not self._dropped_noted:
                    self._dropped_noted = True
                    self.worker_log(
                        f"the job wrote more than {MAX_LOG_EVENTS} log lines; the rest are "
                        "not kept",
                        "warning",
                    )

    def _progress(self, record: dict[str, Any]) -> None:
        progress = parse_progress(record)
        if progress is None:
            return
        self.latest_progress = progress
        self._pending = [(e, d) for e, d in self._pending if e != "progress"]
        if progress != self._sent_progress:
            self._pending.append(("progress", progress))

    def worker_log(self, message: str, level: str = "info") -> None:
        """A line of the worker's own about the job, sent with the child's."""
        text = _text(message, MESSAGE_CHARS) or ""
        data = {"message": text, "source": "worker", "level": level, "ts": time.time()}
        self._pending.append(("log", data))

    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self._pending)

    def sent(self, count: int) -> None:
        """The first `count` pending events are committed."""
        for event, data in self._pending[:count]:
            if event == "progress":
                self._sent_progress = data
        del self._pending[:count]
