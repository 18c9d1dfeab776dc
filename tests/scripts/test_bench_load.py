"""The "API under load" section of BENCHMARKS.md is rendered from docs/bench/load.json alone,
and says of each target whether it was met (scripts/benchlib/load.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import load  # noqa: E402


def _phase(clients: int, p99: float, errors: int = 0) -> dict[str, Any]:
    return {
        "clients": clients,
        "interval_s": 0.25,
        "seconds": 20.0,
        "requests": 1000,
        "rps": 60.5,
        "p50_ms": 3.25,
        "p99_ms": p99,
        "max_ms": 99.0,
        "errors": errors,
        "errors_by_kind": {"503": errors} if errors else {},
        "job_running_after": True,
        "load_average_1min": 1.0,
    }


def _record() -> dict[str, Any]:
    burst = {
        "requests": 500,
        "with_idempotency_key": 250,
        "statuses": {"202": 500},
        "replays_same_job": 125,
        "keys": 125,
        "distinct_jobs": 375,
        "expected_jobs": 375,
        "seconds": 4.5,
        "p50_ms": 900.0,
        "p99_ms": 4000.0,
        "wait_bound_s": 120.0,
        "waited_s": 130.0,
        "at_bound": {"succeeded": 30, "queued": 345},
        "cancelled_by_bench": 345,
        "final": {"succeeded": 30, "cancelled": 345},
        "all_terminal": True,
        "tiny_jobs_per_hour": 900,
    }
    upload = {
        "bytes": 2 * 1024**3,
        "status": 415,
        "seconds": 8.0,
        "mb_per_s": 268.4,
        "rss_before_mb": 110.0,
        "rss_peak_mb": 111.0,
        "rss_growth_mb": 1.0,
        "hwm_before_mb": 110.0,
        "hwm_after_mb": 111.0,
    }
    return {
        "run": {
            "command": "python scripts/bench.py --load",
            "date": "2026-12-01",
            "wall_s": 600.0,
            "load_average_1min_before": 0.5,
            "cpu_model": "Test CPU",
            "cores": 2,
            "cpu_flags": ["avx2"],
            "options": {"interval": 0.25, "seconds": 20.0},
        },
        "modes": {
            "sqlite": {
                "reads": {
                    "1": {"api_processes": 1, "phases": [_phase(16, 12.5), _phase(64, 75.0)]}
                },
                "burst": burst,
                "upload": upload,
            },
            "postgres": {"reads": {"2": {"api_processes": 2, "phases": [_phase(16, 9.0, 3)]}}},
        },
        "skipped": {},
    }


def test_each_target_is_met_or_missed_by_how_much() -> None:
    text = load.render(_record())

    rows = [line for line in text.splitlines() if line.startswith("| SQLite (embedded) | 1 |")]
    assert "<= 20 ms: met" in rows[0]
    assert "<= 50 ms: **missed** by 25 ms" in rows[1]
    pg = next(line for line in text.splitlines() if line.startswith("| Postgres"))
    assert "| 3 |" in pg and "**missed**" in pg  # errors miss the target whatever the p99
    assert "then 345 cancelled by the bench" in text
    assert ">= 200 MB/s, < 50 MB: met" in text


def test_an_unmeasured_section_says_how_to_measure_it() -> None:
    assert "python scripts/bench.py --load" in load.render(None)


def test_a_skipped_mode_says_why() -> None:
    record = _record()
    record["skipped"] = {"postgres": "Postgres unreachable (refused)"}

    assert "Not measured: postgres (Postgres unreachable (refused))." in load.render(record)


def test_the_big_file_has_the_size_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    load.make_big_file(path, 17 * 1024**2 + 5)

    data = path.read_bytes()
    assert len(data) == 17 * 1024**2 + 5
    assert data[: 1024**2] != data[16 * 1024**2 : 17 * 1024**2]  # no two MiB alike
