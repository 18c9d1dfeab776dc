"""What an MLflow run of a job holds, built from the job and its report (no MLflow here).

- params: the job spec flattened to dotted keys (`steps.0.op`, `benchmark.batch_sizes`),
  `callback_url` left out (it may carry a token); keys and values cut to MLflow's limits.
- metrics: only numbers the report has: the optimized model's `latency_p50_ms_b{N}` and the
  original's `baseline_latency_p50_ms_b{N}`, `speedup_b{N}`, `size_ratio`, `size_bytes`,
  `baseline_size_bytes`, `cosine_mean` / `cosine_min` / `top1_agreement` (the worst output;
  per output as `cosine_mean.<output>` too when there are several), `accuracy_drop`,
  `accuracy_baseline`, `accuracy_optimized`.
- tags: `modelpress.job_id`, `modelpress.model_id`, `modelpress.tenant_id`, `modelpress.status`,
  `modelpress.ops`, `modelpress.verdict` (`met`, `not_met`, or `none` when nothing was judged),
  `modelpress.verdict_reasons`, `modelpress.error_code` (failed jobs).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from typing import Any

# MLflow's limits (mlflow/utils/validation.py); checked against the installed MLflow in tests.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
_INVALID_KEY_CHARS = re.compile(r"[^\w.\- :]")
_HIDDEN_SPEC_KEYS = frozenset({"callback_url"})
TAG_PREFIX = "modelpress."
JOB_ID_TAG = TAG_PREFIX + "job_id"
COMPLETE_TAG = TAG_PREFIX + "logged"  # set last: a run with it is complete


def key(text: str) -> str:
    """A valid MLflow param, metric or tag key: odd characters become `_`; a key over the limit
    keeps its start and a short hash of the whole (two long keys stay distinct)."""
    cleaned = _INVALID_KEY_CHARS.sub("_", text) or "_"
    if cleaned in {".", ".."}:
        cleaned = "_"
    if len(cleaned) <= MAX_KEY_LENGTH:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{cleaned[: MAX_KEY_LENGTH - 13]}-{digest}"


def cut(value: str, limit: int) -> str:
    """`value` within `limit` characters; a cut one ends with `...`."""
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _flat(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _flat(item, f"{prefix}.{name}" if prefix else str(name))
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for index, item in enumerate(value):
            yield from _flat(item, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, _scalar(value)


def params(spec: dict[str, Any]) -> dict[str, str]:
    """The spec as MLflow params: nested objects and lists of objects flattened with dots, lists
    of scalars as JSON (`[1, 32]`), strings as they are, other scalars as JSON."""
    visible = {k: v for k, v in spec.items() if k not in _HIDDEN_SPEC_KEYS}
    return {key(k): cut(v, MAX_PARAM_VALUE_LENGTH) for k, v in _flat(visible, "") if k}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _put(metrics: dict[str, float], name: str, value: Any) -> None:
    number = _number(value)
    if number is not None:
        metrics[key(name)] = number


def _latency(metrics: dict[str, float], prefix: str, side: dict[str, Any]) -> None:
    for batch, stats in (side.get("latency_ms") or {}).items():
        if isinstance(stats, dict):
            _put(metrics, f"{prefix}latency_p50_ms_b{batch}", stats.get("p50"))


def _worst(outputs: dict[str, Any], field: str) -> float | None:
    values = [_number(o.get(field)) for o in outputs.values() if isinstance(o, dict)]
    present = [v for v in values if v is not None]
    return min(present) if present else None


def metrics(report: dict[str, Any] | None) -> dict[str, float]:
    """The report's measured numbers as MLflow metrics (what it lacks is left out)."""
    if not report:
        return {}
    out: dict[str, float] = {}
    optimized, baseline = report.get("optimized") or {}, report.get("baseline") or {}
    _latency(out, "", optimized)
    _latency(out, "baseline_", baseline)
    comparison = report.get("comparison") or {}
    for batch, value in (comparison.get("speedup") or {}).items():
        _put(out, f"speedup_b{batch}", value)
    _put(out, "size_ratio", comparison.get("size_ratio"))
    _put(out, "size_bytes", optimized.get("size_bytes"))
    _put(out, "baseline_size_bytes", baseline.get("size_bytes"))
    outputs = (report.get("fidelity") or {}).get("outputs") or {}
    for field in ("cosine_mean", "cosine_min", "top1_agreement"):
        _put(out, field, _worst(outputs, field))
        if len(outputs) > 1:
            for name, o in outputs.items():
                _put(out, f"{field}.{name}", (o or {}).get(field))
    accuracy = report.get("accuracy") or {}
    _put(out, "accuracy_drop", accuracy.get("drop"))
    _put(out, "accuracy_baseline", accuracy.get("baseline"))
    _put(out, "accuracy_optimized", accuracy.get("optimized"))
    return out


def verdict_word(verdict: dict[str, Any] | None) -> str | None:
    """`met`, `not_met`, `none` (judged nothing), or None (no verdict: the job failed)."""
    if verdict is None:
        return None
    met = verdict.get("met")
    return "none" if met is None else ("met" if met else "not_met")


def ops(spec: dict[str, Any]) -> str:
    """The job's ops joined by `+` (`prune+quantize`), or `auto` for a recipe."""
    if spec.get("recipe"):
        return str(spec["recipe"])
    return "+".join(str(s.get("op")) for s in spec.get("steps") or [] if isinstance(s, dict))


def tags(job: dict[str, Any], verdict: dict[str, Any] | None) -> dict[str, str]:
    """The run's `modelpress.*` tags for the job snapshot of the outbox row."""
    values = {
        JOB_ID_TAG: job["id"],
        TAG_PREFIX + "model_id": job.get("model_id"),
        TAG_PREFIX + "tenant_id": job.get("tenant_id"),
        TAG_PREFIX + "status": job.get("status"),
        TAG_PREFIX + "ops": ops(job.get("spec") or {}),
        TAG_PREFIX + "error_code": job.get("error_code"),
        TAG_PREFIX + "verdict": verdict_word(verdict),
    }
    if verdict and verdict.get("reasons"):
        values[TAG_PREFIX + "verdict_reasons"] = "; ".join(str(r) for r in verdict["reasons"])
    return {k: cut(str(v), MAX_TAG_VALUE_LENGTH) for k, v in values.items() if v}


RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
