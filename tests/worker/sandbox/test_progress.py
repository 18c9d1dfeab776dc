"""The child's progress file and the supervisor's `Relay`: records become bounded job events
(the file is written by a process that ran an uploaded model: it may hold anything)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest

from worker.sandbox import progress as progress_module
from worker.sandbox.progress import LogLines, Progress, Relay


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_child_writes_progress_step_and_log_records(tmp_path: Path) -> None:
    out = Progress(tmp_path)

    out.emit(0.25, "step 1/2: optimize", 0)
    out.step(0, "optimize", "started")
    out.step(0, "optimize", "finished", 0.123456)
    out.log("warning", "worker.x", "careful")

    records = _records(tmp_path / "progress.jsonl")
    assert [r.get("kind") for r in records] == [None, "step", "step", "log"]
    assert records[2]["wall_s"] == 0.1235
    assert all(isinstance(r["ts"], float) for r in records)


def test_log_lines_keep_the_pipelines_info_and_only_others_warnings(tmp_path: Path) -> None:
    handler = LogLines(Progress(tmp_path))
    logger = logging.getLogger("test.progress.handler")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    ours = logging.getLogger("worker.pipeline.test_progress")
    ours.propagate = False
    ours.setLevel(logging.INFO)
    ours.addHandler(handler)
    try:
        logger.info("library chatter")
        logger.warning("library warning")
        ours.info("step 1/1 quantize started")
    finally:
        logger.removeHandler(handler)
        ours.removeHandler(handler)

    messages = [r["message"] for r in _records(tmp_path / "progress.jsonl")]
    assert messages == ["library warning", "step 1/1 quantize started"]


def test_relay_turns_records_into_events_in_order() -> None:
    relay = Relay()

    relay.add(
        [
            {"fraction": 0.1, "message": "step 1/1: quantize", "step": 0, "ts": 1.0},
            {"kind": "step", "index": 0, "op": "quantize", "phase": "started"},
            {"kind": "log", "level": "info", "logger": "worker.pipeline.job", "message": "hi"},
            {"kind": "step", "index": 0, "op": "quantize", "phase": "finished", "wall_s": 0.5},
        ]
    )

    pending = [(e, {k: v for k, v in d.items() if k != "ts"}) for e, d in relay.pending()]
    assert pending == [
        ("progress", {"fraction": 0.1, "message": "step 1/1: quantize", "step": 0}),
        ("step", {"index": 0, "op": "quantize", "name": "quantize", "phase": "started"}),
        (
            "log",
            {"message": "hi", "source": "job", "level": "info", "logger": "worker.pipeline.job"},
        ),
        (
            "step",
            {"index": 0, "op": "quantize", "name": "quantize", "phase": "finished", "wall_s": 0.5},
        ),
    ]


def test_a_log_lines_time_is_the_childs_within_the_attempt() -> None:
    relay = Relay()
    now = time.time()

    relay.add(
        [
            {"kind": "log", "message": "then", "ts": now - 0.01},
            {"kind": "log", "message": "forged past", "ts": 0},
            {"kind": "log", "message": "forged future", "ts": now + 10**6},
        ]
    )

    times = [d["ts"] for _, d in relay.pending()]
    assert times[0] == pytest.approx(max(now - 0.01, relay.since), abs=0.002)
    assert times[1] == pytest.approx(relay.since, abs=0.002)
    assert relay.since <= times[2] <= time.time()


def test_relay_sends_progress_only_on_change_and_only_the_latest() -> None:
    relay = Relay()
    relay.add([{"fraction": 0.1, "message": "a"}])
    relay.sent(len(relay.pending()))

    relay.add([{"fraction": 0.1, "message": "a"}])  # unchanged: nothing to send
    unchanged = relay.pending()
    relay.add([{"fraction": 0.2, "message": "b"}, {"fraction": 0.3, "message": "c"}])

    assert unchanged == []
    assert relay.pending() == [("progress", {"fraction": 0.3, "message": "c"})]
    assert relay.latest_progress == {"fraction": 0.3, "message": "c"}


@pytest.mark.parametrize(
    "record",
    [
        {"fraction": math.nan, "message": "x"},
        {"fraction": "0.5", "message": "x"},
        {"fraction": 0.5, "message": ["x"]},
        {"fraction": True, "message": "x"},
        {"kind": "step", "index": -1, "op": "q", "phase": "started"},
        {"kind": "step", "index": 0, "op": "q", "phase": "exploded"},
        {"kind": "step", "index": 0, "op": 7, "phase": "started"},
        {"kind": "log", "message": ""},
        {"kind": "log", "message": {"nested": 1}},
        {"kind": "nonsense"},
    ],
)
def test_relay_drops_what_does_not_fit(record: dict[str, object]) -> None:
    relay = Relay()

    relay.add([record, "not a dict"])  # type: ignore[list-item]

    assert relay.pending() == []


def test_relay_bounds_fields_and_the_number_of_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "MAX_LOG_EVENTS", 3)
    relay = Relay()

    relay.add([{"kind": "log", "level": "shout", "message": "x" * 10_000 + "\nsecond"}])
    relay.add([{"kind": "log", "message": f"line {i}"} for i in range(10)])
    relay.add([{"fraction": 7.0, "message": "m" * 1000}])

    pending = relay.pending()
    logs = [data for event, data in pending if event == "log"]
    assert len(logs[0]["message"]) == progress_module.MESSAGE_CHARS
    assert "\n" not in logs[0]["message"] and logs[0]["level"] == "info"
    assert [d["source"] for d in logs] == ["job", "job", "job", "worker"]
    assert "more than 3 log lines" in logs[-1]["message"]
    assert pending[-1] == ("progress", {"fraction": 1.0, "message": "m" * 299 + "…"})
