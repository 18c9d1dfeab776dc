"""The report: environment fingerprint, comparison, verdict, manifest; validated JSON."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from app.artifacts.schemas import Report
from app.jobs.schemas import Constraints
from worker.cpu import FLAGS_ENV, cpu_info

REPORT_SCHEMA_VERSION = "1"
LIBRARIES = ("modelpress", "onnx", "onnxruntime", "numpy", "torch", "onnxscript")


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gpu() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"gpu": None}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "gpu_memory_bytes": props.total_memory,
        "cuda_runtime": torch.version.cuda,
        "gpu_capability": f"{props.major}.{props.minor}",
    }


def environment(
    threads: int, device: str = "cpu", providers: list[str] | None = None
) -> dict[str, Any]:
    """Where the numbers were measured: CPU, GPU when used, threads, memory, libraries."""
    cpu = cpu_info()
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "device": device,
        **(_gpu() if device == "cuda" else {}),
        "execution_provider": providers or ["CPUExecutionProvider"],
        "cpu_model": cpu.model,
        "cpu_flags": list(cpu.flags),
        **({"cpu_flags_overridden_by": FLAGS_ENV} if os.environ.get(FLAGS_ENV) else {}),
        "cores": os.cpu_count(),
        "threads": threads,
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": libraries,
    }


def comparison(baseline: dict[str, Any], optimized: dict[str, Any]) -> dict[str, Any]:
    """Ratios derived from the measured numbers (nothing new is estimated)."""
    speedup = {}
    for batch, stats in baseline.get("latency_ms", {}).items():
        other = optimized.get("latency_ms", {}).get(batch)
        if other and other.get("p50"):
            speedup[batch] = round(stats["p50"] / other["p50"], 4)
    size_ratio = (
        optimized["size_bytes"] / baseline["size_bytes"] if baseline["size_bytes"] else None
    )
    return {"size_ratio": size_ratio, "speedup": speedup}


def verdict(
    constraints: Constraints | None,
    comp: dict[str, Any],
    optimized: dict[str, Any],
    accuracy: dict[str, Any] | None,
) -> dict[str, Any]:
    """Met or not, with one reason per constraint checked; `met` is None without a budget."""
    notes = []
    slower = [b for b, s in comp["speedup"].items() if s < 1.0]
    if slower:
        notes.append(
            f"The optimized model is slower than the original at batch size(s) {', '.join(slower)}."
        )
    noise = comp.get("noise") or {}
    within = [
        b for b, s in comp["speedup"].items() if b in noise and abs(s - 1) <= abs(noise[b] - 1)
    ]
    if within:
        notes.append(
            f"At batch size(s) {', '.join(within)} the speed difference is within the noise "
            "measured between two copies of the original."
        )
    if constraints is None:
        return {"met": None, "reasons": [], "notes": notes}
    reasons: list[str] = []
    ok = True

    def judge(passed: bool, text: str) -> None:
        nonlocal ok
        ok = ok and passed
        reasons.append(("met: " if passed else "missed: ") + text)

    if constraints.max_accuracy_drop is not None:
        if accuracy is None:
            judge(False, "max_accuracy_drop needs `evaluation` (a labelled dataset); not measured")
        else:
            judge(
                accuracy["drop"] <= constraints.max_accuracy_drop,
                f"accuracy drop {accuracy['drop']:.4f} <= {constraints.max_accuracy_drop}",
            )
    if constraints.min_speedup is not None:
        worst = min(comp["speedup"].values(), default=0.0)
        judge(
            worst >= constraints.min_speedup,
            f"speedup {worst:.3f}x >= {constraints.min_speedup}x at every batch size",
        )
    if constraints.max_size_bytes is not None:
        judge(
            optimized["size_bytes"] <= constraints.max_size_bytes,
            f"size {optimized['size_bytes']} <= {constraints.max_size_bytes} bytes",
        )
    if constraints.max_latency_ms is not None:
        worst_ms = max((s["p50"] for s in optimized["latency_ms"].values()), default=float("inf"))
        judge(
            worst_ms <= constraints.max_latency_ms,
            f"p50 latency {worst_ms:.3f} ms <= {constraints.max_latency_ms} ms",
        )
    if constraints.fail_if_slower:
        judge(not slower, "not slower than the original at any batch size")
    return {"met": ok, "reasons": reasons, "notes": notes}


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON; a value JSON has no type for is written as its str()."""
    path.write_text(_dumps(data))


def write_report(path: Path, report: dict[str, Any]) -> Report:
    """Write the report as JSON once it validates against the published `Report` schema.

    Raises:
        pydantic.ValidationError: the report does not fit the schema (a worker bug: nothing is
            written, and the job fails instead of publishing a report the API cannot read).
    """
    text = _dumps(report)
    # Validate what a reader will load back (batch sizes keyed as strings, numpy scalars turned
    # to text), in the same way the API reads it.
    validated = Report.model_validate(json.loads(text))
    path.write_text(text)
    return validated


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
