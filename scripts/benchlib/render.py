"""BENCHMARKS.md from saved measurements: one `make bench` run, the saved real-model run and
the saved GPU check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchlib import hostile, large, overhead, throughput
from benchlib import load as api_load
from benchlib.render_gpu import gpu_section
from benchlib.render_real import REAL_JSON, real_section
from benchlib.render_seed import seed_section, service_section
from benchlib.render_transformer import section as transformer_section


def render(
    results: dict[str, Any], gpu: dict[str, Any] | None, real: dict[str, Any] | None = None
) -> str:
    """The whole of BENCHMARKS.md: every figure comes from `results`, `gpu` or `real` (by
    default the saved docs/bench/real.json, where there is one)."""
    real = real if real is not None else load(REAL_JSON)
    parts = [
        ["# Benchmarks", "", header(results)],
        transformer_section(results["transformer"]),
        seed_section(results["seed_network"]),
        service_section(results["api_reads_ms"], results["upload_memory"]),
        real_section(real, results["run"].get("real_skipped")),
        hostile_section(),
        load_section(),
        [overhead.render(load(overhead.OVERHEAD_JSON)).rstrip("\n")],
        [throughput.render(load(throughput.THROUGHPUT_JSON)).rstrip("\n")],
        [large.render(load(large.LARGE_JSON)).rstrip("\n")],
        gpu_section(gpu),
    ]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def hostile_section() -> list[str]:
    """The hostile-upload refusals, from docs/bench/hostile.json (`--hostile`), where saved."""
    data = load(hostile.HOSTILE_JSON)
    if data is None:
        return ["## Hostile uploads", "", "Not measured yet: `python scripts/bench.py --hostile`."]
    return [hostile.render(data).rstrip("\n")]


def load_section() -> list[str]:
    """The API under load, from docs/bench/load.json (`--load`), where saved."""
    return [api_load.render(load(api_load.LOAD_JSON)).rstrip("\n")]


def header(results: dict[str, Any]) -> str:
    """Where and how the numbers were measured, and how to measure them again."""
    env = results["transformer"]["service"]["report"]["environment"]
    run = results["run"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items())
    return (
        "Written by `make bench` (`scripts/bench.py`) from saved measurements. The sections up "
        'to and including "The service itself" were measured by '
        f"`{run['command']}` in one run of {run['wall_s'] / 60:.0f} min "
        f"on {run['date']}{_load(run)}, saved in `docs/bench/bench.json`, on this machine kind: "
        f"{env['cpu_model']}, {env['cores']} cores (flags {', '.join(env['cpu_flags'])}); {libs}. "
        "Latencies are medians (p50) of interleaved runs; every ratio compares numbers from the "
        "same run. The real-model and GPU sections say where their own numbers come from. "
        "`make bench` measures again and rewrites this file; "
        "`python scripts/bench.py --render` rewrites it from `docs/bench/*.json` alone."
    )


def _load(run: dict[str, Any]) -> str:
    """How busy the machine was when the run started (other work distorts latencies)."""
    load = run.get("load_average_1min_before")
    return "" if load is None else f" (1-minute load average {load:.2f} as it started)"


def load(path: Path) -> dict[str, Any] | None:
    """A saved measurement file, or None where there is none."""
    return json.loads(path.read_text()) if path.exists() else None
