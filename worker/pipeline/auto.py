"""`recipe: auto`: try candidate pipelines, measure each against the original, keep the best one
that meets the constraints (the guard included: never slower beyond the noise, never broken), or
the closest one that is neither slower nor broken, with the reason, when none does; when every
candidate is slower or broken, the original itself. Every candidate, failed ones included, is in
the report.

With `constraints.min_cosine` (which bounds each output's `cosine_mean`), a candidate qualifies
here only if its worst sample also reaches `sample_floor(min_cosine)` (app/passes/quantize.py:
0.98 for 0.995): a mean over many samples hides a few broken ones, and the mixed-precision
candidates are built to that floor. The candidate's `reasons` say when it missed it; the job's
verdict still judges the contract's constraints only. The mixed-precision candidates judge their
nodes on the job's real data (`_mixed_specs`), not on synthesized inputs."""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import onnx
from pydantic import TypeAdapter, ValidationError

from app.core.errors import JobFailure
from app.jobs.schemas import Constraints, has_fidelity_target
from app.passes.quantize import sample_floor
from app.passes.registry import CATALOG
from app.passes.spec import StepConfig
from worker.pipeline.job import JobRun, measure_job, run_steps
from worker.precision.nbits import float_weights
from worker.report.build import COLLAPSE_FLOOR, NOT_RECOMMENDED, comparison, verdict

log = logging.getLogger(__name__)
STEPS = TypeAdapter(list[StepConfig])
MAX_CANDIDATE_ARTIFACT_BYTES = 256 * 1024 * 1024
# After the transformer fusions, the Q/K/V projections live in fused `Attention` nodes, which the
# dynamic default (MatMul, Gemm, Gather) leaves float: on all-MiniLM-L6-v2 that kept a quarter of
# the model's time in fp32 (ONNX Runtime's profiler). ONNX Runtime runs them as QAttention.
FUSED_QUANTIZE: dict[str, Any] = {
    "op": "quantize",
    "op_types": ["MatMul", "Gemm", "Gather", "Attention"],
}
WEIGHT_ONLY_MIN_ELEMENTS = 1_000_000  # a threshold, not a measurement: smaller models get int8 only


def candidate_specs(job: JobRun) -> list[tuple[str, list[dict[str, Any]]]]:
    """The pipelines worth trying for this model and the data the user gave."""
    cal = job.spec.calibration_dataset_id
    names = set(CATALOG.names())
    out: list[tuple[str, list[dict[str, Any]]]] = [
        ("int8-dynamic", [{"op": "quantize"}]),
        ("int8-dynamic-per-tensor", [{"op": "quantize", "per_channel": False}]),
        ("graph-optimized", [{"op": "optimize"}]),
        ("optimized+int8-dynamic", [{"op": "optimize"}, {"op": "quantize"}]),
    ]
    if "convert" in names:
        out.append(("fp16", [{"op": "convert", "precision": "fp16"}]))
    if has_fidelity_target(job.spec):
        fused = {"op": "optimize", "transformer_fusions": True}
        out.append(("fusions+int8-dynamic", [fused, FUSED_QUANTIZE]))
        out.extend(_mixed_specs(job, fused))
    if job.fmt == "onnx" and _matmul_weight_elements(job.source) >= WEIGHT_ONLY_MIN_ELEMENTS:
        out.append(("int4-weight-only", [{"op": "quantize", "mode": "weight_only"}]))
    if cal:
        static = {"op": "quantize", "mode": "static", "calibration_dataset_id": cal}
        out.append(("int8-static", [static]))
        out.append(("int8-static-entropy", [{**static, "calibration": "entropy"}]))
        if {"prune.channel", "distill"} <= names:
            for ratio in (0.25, 0.5):
                out.append(
                    (
                        f"channel-prune-{int(ratio * 100)}%+distill+int8-static",
                        [
                            {"op": "prune", "method": "channel", "ratio": ratio},
                            {"op": "distill", "dataset_id": cal},
                            static,
                        ],
                    )
                )
    return out


def _mixed_specs(job: JobRun, fused: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """`keep_float: auto` candidates (they meet the job's fidelity target on the inputs they
    judge on: `min_cosine` and its sample floor, and/or `max_accuracy_drop`; and are never
    slower per op type), judged on the job's real data if any: the calibration dataset where
    given (the evaluation set then stays held out, unless an accuracy target needs labels the
    calibration data lacks), else the evaluation dataset (the candidate is then chosen on the
    data its fidelity is reported on)."""
    cal = job.spec.calibration_dataset_id
    evaluation = getattr(job.spec, "evaluation", None)
    real = cal or (evaluation.dataset_id if evaluation is not None else None)
    mixed: dict[str, Any] = {"op": "quantize", "keep_float": "auto"}
    if real is not None:
        mixed["sensitivity_dataset_id"] = real
    out = [
        ("int8-dynamic-mixed", [mixed]),
        ("fusions+int8-dynamic-mixed", [fused, {**mixed, **FUSED_QUANTIZE}]),
    ]
    if cal:
        static = {**mixed, "mode": "static", "calibration_dataset_id": cal}
        out.append(("int8-static-mixed", [static]))
    return out


def _matmul_weight_elements(path: Path) -> int:
    """Float weights read by MatMul and Gather nodes: where weight-only quantization can pay."""
    model = onnx.load(str(path), load_external_data=False)
    return sum(float_weights(model, {"MatMul", "Gather"}).values())


def _score(record: dict[str, Any], objective: str) -> float:
    """Higher is better: geometric-mean speedup, or the size reduction."""
    if objective == "size":
        return -float(record["size_bytes"])
    speedups = [s for s in record["speedup"].values() if s]
    return math.exp(sum(math.log(s) for s in speedups) / len(speedups)) if speedups else 0.0


def _miss(record: dict[str, Any], job: JobRun) -> float:
    """How far a candidate is from the constraints (0 = met), each miss relative to its bound."""
    c, total = job.spec.constraints or Constraints(), 0.0
    cosine = record.get("cosine_mean")
    floor = c.min_cosine if c.min_cosine is not None else COLLAPSE_FLOOR
    total += max(0.0, floor - (cosine if cosine is not None else -1.0)) / max(abs(floor), 1e-3)
    worst_floor = sample_floor(c.min_cosine)
    if worst_floor is not None:
        worst_sample = record.get("cosine_min")
        worst_sample = worst_sample if worst_sample is not None else -1.0
        total += max(0.0, worst_floor - worst_sample) / max(abs(worst_floor), 1e-3)
    if c.max_accuracy_drop is not None:
        drop = record["accuracy_drop"] if record["accuracy_drop"] is not None else 1.0
        total += max(0.0, drop - c.max_accuracy_drop) / max(c.max_accuracy_drop, 1e-3)
    worst = min(record["speedup"].values(), default=0.0)
    if c.min_speedup is not None:
        total += max(0.0, c.min_speedup - worst) / c.min_speedup
    if c.fail_if_slower:
        total += max(0.0, 1.0 - worst)
    if c.max_size_bytes is not None:
        total += max(0.0, record["size_bytes"] - c.max_size_bytes) / c.max_size_bytes
    if c.max_latency_ms is not None:
        slowest = max(record["latency_ms_p50"].values(), default=math.inf)
        total += max(0.0, slowest - c.max_latency_ms) / c.max_latency_ms
    return total


def _try(job: JobRun, name: str, steps: list[Any], index: int, total: int) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {"name": name, "steps": [s.model_dump(mode="json") for s in steps]}
    span = (0.85 * index / total, 0.85 * (index + 1) / total)
    try:
        path, fmt, records = run_steps(job, steps, job.scratch / "auto" / f"c{index}", span)
        measured = measure_job(job, path, fmt, full=False)
    except (JobFailure, Exception) as exc:  # a candidate that fails is reported, not fatal
        log.warning("auto candidate failed", extra={"candidate": name, "error": str(exc)})
        detail = exc.detail if isinstance(exc, JobFailure) else f"{type(exc).__name__}: {exc}"
        return {
            **record,
            "error": detail[:500],
            "met": False,
            "wall_s": time.perf_counter() - started,
        }
    comp = comparison(measured["baseline"], measured["optimized"])
    judged = verdict(
        job.spec.constraints,
        comp,
        measured["optimized"],
        measured["accuracy"],
        measured["fidelity"],
    )
    outputs = measured["fidelity"]["outputs"].values()
    return judge_worst_sample(
        job,
        {
            **record,
            "error": None,
            "path": str(path),
            "format": fmt,
            "records": records,
            "size_bytes": measured["optimized"]["size_bytes"],
            "latency_ms_p50": {b: s["p50"] for b, s in measured["optimized"]["latency_ms"].items()},
            "speedup": comp["speedup"],
            "cosine_min": min(
                (o["cosine_min"] for o in outputs if o["cosine_min"] is not None), default=None
            ),
            "cosine_mean": min(
                (o["cosine_mean"] for o in outputs if o["cosine_mean"] is not None), default=None
            ),
            "accuracy": measured["accuracy"]["optimized"] if measured["accuracy"] else None,
            "accuracy_drop": measured["accuracy"]["drop"] if measured["accuracy"] else None,
            "met": judged["met"],
            "guarded": not any(n.startswith(NOT_RECOMMENDED) for n in judged["notes"]),
            "reasons": judged["reasons"],
            "wall_s": round(time.perf_counter() - started, 3),
        },
    )


def judge_worst_sample(job: JobRun, record: dict[str, Any]) -> dict[str, Any]:
    """With `min_cosine`, a candidate whose worst sample misses `sample_floor(min_cosine)` does
    not qualify (the verdict bounds the mean only; auto guards the worst sample too)."""
    c = job.spec.constraints
    floor = sample_floor(c.min_cosine if c is not None else None)
    worst = record.get("cosine_min")
    if floor is None or record.get("met") is None:
        return record
    if worst is not None and worst >= floor:
        return record | {"reasons": [*record["reasons"], _floor_reason("met", worst, floor)]}
    shown = -1.0 if worst is None else worst
    missed = _floor_reason("missed", shown, floor)
    return record | {"met": False, "reasons": [*record["reasons"], missed]}


def _floor_reason(word: str, worst: float, floor: float) -> str:
    return f"{word}: worst sample cosine {worst:.4f} >= {floor:.4f} (recipe auto's sample floor)"


def _choose(tried: list[dict[str, Any]], job: JobRun) -> tuple[dict[str, Any], str]:
    ran = [r for r in tried if r["error"] is None]
    if not ran:
        raise JobFailure(
            "no_candidate",
            "Every candidate pipeline failed: "
            + "; ".join(f"{r['name']}: {r['error']}" for r in tried),
        )
    qualified = [r for r in ran if r["met"] is not False]
    objective = job.spec.objective
    if qualified:
        best = max(qualified, key=lambda r: _score(r, objective))
        count = len(qualified)
        why = f"{best['name']} is the best of {count} candidate(s) that qualify, by {objective}."
        return best, why
    safe = [r for r in ran if r.get("guarded")]
    if not safe:
        return _original(job), (
            "Every candidate was slower than the original beyond the noise or broke its outputs "
            "(see each candidate's reasons): the original model is returned unchanged."
        )
    best = min(safe, key=lambda r: (_miss(r, job), -_score(r, objective)))
    missed = "; ".join(x for x in best["reasons"] if x.startswith("missed"))
    why = (
        f"No candidate met the constraints; {best['name']} came closest ({missed}) without "
        "being slower or broken. It is returned so that nothing measured is thrown away."
    )
    return best, why


def _original(job: JobRun) -> dict[str, Any]:
    """The pseudo-candidate `original`: no step, the uploaded model as it is (measured in full
    by the job like any result; nothing about it is estimated here)."""
    return {
        "name": "original",
        "steps": [],
        "error": None,
        "path": str(job.source),
        "format": job.fmt,
        "records": [],
        "met": None,
    }


def _within(raw: list[dict[str, Any]], left_s: float, candidates_left: int) -> list[dict[str, Any]]:
    """A mixed-precision candidate's per-node measurements get a share of the time left, so one
    candidate cannot spend the whole budget (on the real MiniLM under load, unbounded probes ran
    past the sandbox's wall-clock cap and the job failed `timeout`)."""
    share = max(10.0, min(300.0, left_s / max(1, candidates_left) / 2))
    return [
        {**step, "sensitivity_budget_s": min(step.get("sensitivity_budget_s", 300.0), share)}
        if step.get("keep_float") == "auto" or step.get("sensitivity")
        else step
        for step in raw
    ]


def run_auto(
    job: JobRun, out: Path
) -> tuple[Path, str, list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Try the candidates within the time budget; returns the chosen model and the report parts."""
    deadline = time.monotonic() + job.spec.time_budget_s
    specs = candidate_specs(job)
    tried: list[dict[str, Any]] = []
    for index, (name, raw) in enumerate(specs):
        if time.monotonic() > deadline:
            tried.append(
                {"name": name, "steps": raw, "error": "skipped: time budget spent", "met": False}
            )
            continue
        raw = _within(raw, deadline - time.monotonic(), len(specs) - index)
        try:
            steps = STEPS.validate_python(raw)
        except ValidationError as exc:
            tried.append(
                {"name": name, "steps": raw, "error": f"not applicable: {exc}", "met": False}
            )
            continue
        tried.append(_try(job, name, steps, index, len(specs)))
    best, why = _choose(tried, job)
    artifacts = _candidate_artifacts(tried, best, out)
    public = [
        {k: v for k, v in r.items() if k not in ("path", "records", "guarded")}
        | {"chosen": r is best}
        for r in (tried if best in tried else [*tried, best])
    ]
    extra = {
        "candidates": public,
        "auto": {"objective": job.spec.objective, "chosen": best["name"], "explanation": why},
        "auto_notes": [why],
    }
    return Path(best["path"]), best["format"], best["records"], extra, artifacts


def _candidate_artifacts(
    tried: list[dict[str, Any]], best: dict[str, Any], out: Path
) -> list[dict[str, Any]]:
    """The other candidates' models, so that a user can take another trade-off (size-capped)."""
    artifacts = []
    for index, record in enumerate(tried):
        if record is best or record.get("error") or "path" not in record:
            continue
        path = Path(record["path"])
        if path.stat().st_size > MAX_CANDIDATE_ARTIFACT_BYTES:
            continue
        ext = path.suffix or ".bin"
        name = f"candidate-{index}{ext}"
        shutil.copyfile(path, out / name)
        record["artifact"] = name
        artifacts.append(
            {"name": name, "kind": "candidate", "media_type": "application/octet-stream"}
        )
    return artifacts
