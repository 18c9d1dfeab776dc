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


COLLAPSE_FLOOR = 0.90  # the guard: cosine_mean or top-1 agreement below this is a broken model
NOT_RECOMMENDED = "Not recommended:"  # how the guard's misses lead the verdict's notes


class _Judge:
    """Collects `met:` / `missed:` reasons; a miss makes the verdict not met."""

    def __init__(self) -> None:
        self.ok = True
        self.reasons: list[str] = []
        self.first: list[str] = []  # misses the notes lead with (the guard's)

    def __call__(self, passed: bool, text: str, lead: bool = False) -> None:
        self.ok = self.ok and passed
        self.reasons.append(("met: " if passed else "missed: ") + text)
        if lead and not passed:
            self.first.append(f"{NOT_RECOMMENDED} {text}.")


def _speed(comp: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Batch sizes where the result is slower beyond the noise band, and within it."""
    noise = comp.get("noise") or {}
    beyond, within = [], []
    for batch, s in comp["speedup"].items():
        if batch in noise and abs(s - 1) <= abs(noise[batch] - 1):
            within.append(batch)
        elif s < 1.0:
            beyond.append(batch)
    return beyond, within


def verdict(
    constraints: Constraints | None,
    comp: dict[str, Any],
    optimized: dict[str, Any],
    accuracy: dict[str, Any] | None,
    fidelity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Met or not, one reason per check: the user's constraints and the guard (docs/product.md,
    "Contract additions": slower beyond the noise band while `fail_if_slower`, the default, or a
    collapsed output without a fidelity constraint of the user's)."""
    c = constraints or Constraints()
    judge, notes = _Judge(), []
    slower, within = _speed(comp)
    if slower:
        notes.append(
            f"The optimized model is slower than the original at batch size(s) "
            f"{', '.join(slower)}, beyond the noise measured."
        )
    if within:
        notes.append(
            f"At batch size(s) {', '.join(within)} the speed difference is within the noise "
            "measured between two copies of the original."
        )
    _budget(c, comp, optimized, accuracy, judge)
    _fidelity(c, (fidelity or {}).get("outputs") or {}, judge)  # a broken model leads the notes
    second = (fidelity or {}).get("second_shape") or {}
    if second.get("optimized_fails"):
        judge(False, str(second["skipped"]), True)
    if c.fail_if_slower:
        judge(not slower, "not slower than the original beyond the noise at any batch size", True)
    return {"met": judge.ok, "reasons": judge.reasons, "notes": judge.first + notes}


def _budget(
    c: Constraints,
    comp: dict[str, Any],
    optimized: dict[str, Any],
    accuracy: dict[str, Any] | None,
    judge: _Judge,
) -> None:
    if c.max_accuracy_drop is not None:
        if accuracy is None:
            judge(False, "max_accuracy_drop needs `evaluation` (a labelled dataset); not measured")
        else:
            drop = accuracy["drop"]
            judge(drop <= c.max_accuracy_drop, f"accuracy drop {drop:.4f} <= {c.max_accuracy_drop}")
    if c.min_speedup is not None:
        worst = min(comp["speedup"].values(), default=0.0)
        judge(
            worst >= c.min_speedup, f"speedup {worst:.3f}x >= {c.min_speedup}x at every batch size"
        )
    if c.max_size_bytes is not None:
        size = optimized["size_bytes"]
        judge(size <= c.max_size_bytes, f"size {size} <= {c.max_size_bytes} bytes")
    if c.max_latency_ms is not None:
        worst_ms = max((s["p50"] for s in optimized["latency_ms"].values()), default=float("inf"))
        judge(
            worst_ms <= c.max_latency_ms, f"p50 latency {worst_ms:.3f} ms <= {c.max_latency_ms} ms"
        )


def _fidelity(c: Constraints, outputs: dict[str, Any], judge: _Judge) -> None:
    """The user's fidelity bounds, else the guard against a collapsed output."""
    if c.min_cosine is not None:
        for name, o in outputs.items():
            value = o.get("cosine_mean")
            shown = "not measurable" if value is None else f"{value:.4f}"
            judge(
                value is not None and value >= c.min_cosine,
                f"`{name}` cosine_mean {shown} >= {c.min_cosine}",
            )
    if c.max_abs_error is not None:
        for name, o in outputs.items():
            value = o.get("max_abs_error")
            shown = "not measurable" if value is None else f"{value:.3g}"
            judge(
                value is not None and value <= c.max_abs_error,
                f"`{name}` max_abs_error {shown} <= {c.max_abs_error}",
            )
    if c.min_cosine is None and c.max_abs_error is None:
        for name, o in outputs.items():
            judge(not _collapsed(o), f"`{name}` is not collapsed ({_fidelity_text(o)})", True)


def _collapsed(o: dict[str, Any]) -> bool:
    if o.get("nan_or_inf") or o.get("shape_match") is False:
        return True
    values = [o.get(k) for k in ("cosine_mean", "top1_agreement", "top1_agreement_last")]
    return o.get("cosine_mean") is None or any(v is not None and v < COLLAPSE_FLOOR for v in values)


def _fidelity_text(o: dict[str, Any]) -> str:
    keys = ("cosine_mean", "top1_agreement", "top1_agreement_last")
    parts = [f"{k} {o[k]:.3f}" for k in keys if o.get(k) is not None]
    if o.get("nan_or_inf"):
        parts.append("NaN or Inf in the output")
    if o.get("shape_match") is False:
        parts.append("shapes differ")
    return ", ".join(parts or ["cosine not measurable"]) + f"; floor {COLLAPSE_FLOOR}"


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
