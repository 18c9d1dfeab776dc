"""The job-overhead and throughput sections of BENCHMARKS.md, rendered from saved records:
the target is computed, not typed, and a miss says by how much and why."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import overhead, throughput  # noqa: E402

RUN = {"command": "python scripts/bench.py --overhead", "date": "2026-12-01"}


def _job(wall: float, latency: float = 8.0) -> dict[str, Any]:
    timings = {
        "queue_wait_s": 0.1,
        "stage_s": 0.1,
        "sandbox_start_s": 0.5,
        "child_total_s": wall - 1.0,
        "benchmark": {"latency_s": latency, "memory_wait_s": 0.2},
    }
    return {"wall_s": wall, "timings": timings}


def _record(default: float, lean: float) -> dict[str, Any]:
    row = {
        "describe": "the encoder",
        "model_bytes": 44_000_000,
        "script": {"wall_s": 8.0},
        "script_again": {"wall_s": 6.0},
        "job": _job(default),
        "job_lean": _job(lean),
    }
    return {
        "run": {**RUN, "load_average_1min_before": 0.5},
        "iterations": 20,
        "batch_sizes": [1, 32],
        "models": {"large": row},
    }


def test_the_target_is_ten_percent_and_two_seconds_over_the_scripts_mean() -> None:
    assert overhead.target_s(7.0) == 1.1 * 7.0 + 2.0


def test_a_default_job_past_the_target_says_by_how_much_and_why() -> None:
    text = overhead.render(_record(default=13.5, lean=9.0))  # target 1.1 x 7 + 2 = 9.7

    assert "| 13.5 | 9.0 | 9.7 | missed by 3.8 s | met |" in text
    assert "the noise-control copy" in text and "latency runs 8.0 s" in text


def test_jobs_within_the_target_are_met() -> None:
    text = overhead.render(_record(default=9.5, lean=9.0))

    assert "| met | met |" in text
    assert "Every default job met the target." in text


def test_throughput_compares_two_workers_with_one() -> None:
    rows = {
        "1": {"small": {"jobs": 24, "succeeded": 24, "wall_s": 60.0, "jobs_per_hour": 1440.0}},
        "2": {"small": {"jobs": 24, "succeeded": 24, "wall_s": 40.0, "jobs_per_hour": 2160.0}},
    }
    data = {"run": {**RUN, "wall_s": 300, "cores": 2, "load_average_1min_before": 0.1}}
    text = throughput.render({**data, "workers": rows})

    assert "| 2 | 24 | 24 | 40.0 | 2160 |" in text
    assert "small 1.50x" in text


def test_sections_say_how_to_measure_when_nothing_is_saved() -> None:
    assert "python scripts/bench.py --overhead" in overhead.render(None)
    assert "python scripts/bench.py --throughput" in throughput.render(None)
