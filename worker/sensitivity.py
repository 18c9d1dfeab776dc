"""Layer sensitivity and automatic mixed precision for quantization, measured, not estimated.

Sensitivity: each quantizable node is quantized alone (with the same settings as the step) and
the model run on the same inputs as the float original; a node's `error` is the drop in the
worst output's `cosine_mean` that it causes on its own. Its `time_share` is its share of the
float model's node time in ONNX Runtime's profiler on those inputs.

Mixed precision (`keep_float: auto`): nodes ordered most sensitive first, the fewest kept float
such that the quantized model meets the target cosine, found by bisection over that order (each
probe a real quantization, measured); all float is the original, which always meets it. Then each
op type still quantized is kept float in turn and both models are timed interleaved on the same
inputs: an op type whose int8 form measured slower than float in this model, on this machine, by
more than `SPEED_MARGIN`, stays float (keeping a node float never lowers fidelity).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from worker.measure.benchmark import compare_outputs, measure_latency
from worker.ort import session as ort_session

Quantize = Callable[[Path, list[str] | None, list[str]], None]  # (out, include, exclude)
SPEED_MARGIN = 0.05  # float must be this much faster: smaller differences are noise here
SPEED_ITERATIONS = 20


def outputs(path: Path, feeds: dict[str, np.ndarray], threads: int) -> list[np.ndarray]:
    return [np.asarray(o) for o in ort_session(path, threads).run(None, feeds)]


def worst_cosine(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    """The lowest, over outputs, of the mean per-sample cosine (the report's `cosine_mean`; an
    output that cannot be compared, e.g. NaN or a changed shape, counts as -1)."""
    names = [f"output_{i}" for i in range(len(reference))]
    compared = compare_outputs(reference, got, names)
    values = [o["cosine_mean"] for o in compared.values()]
    return min((-1.0 if v is None else float(v) for v in values), default=1.0)


def time_shares(
    path: Path, feeds: dict[str, np.ndarray], threads: int, work: Path
) -> dict[str, float]:
    """Each node's share of the summed node time, from ONNX Runtime's profiler (3 runs)."""
    session = ort_session(path, threads, profile_prefix=work / "profile")
    for _ in range(3):
        session.run(None, feeds)
    profile = Path(session.end_profiling())
    totals: dict[str, float] = {}
    for event in json.loads(profile.read_text()):
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name.removesuffix("_kernel_time")
            totals[node] = totals.get(node, 0.0) + float(event.get("dur", 0))
    profile.unlink(missing_ok=True)
    whole = sum(totals.values()) or 1.0
    return {node: value / whole for node, value in totals.items()}


def node_errors(
    nodes: dict[str, str],
    quantize: Quantize,
    evaluate: Callable[[Path], float],
    work: Path,
    budget_s: float,
) -> tuple[dict[str, float], list[str]]:
    """Each node's cosine drop when quantized alone; the nodes the time budget left unmeasured."""
    errors, skipped = {}, []
    deadline = time.monotonic() + budget_s
    for index, name in enumerate(nodes):
        if time.monotonic() > deadline:
            skipped = list(nodes)[index:]
            break
        out = work / f"one-{index}.onnx"
        quantize(out, [name], [])
        errors[name] = round(1.0 - evaluate(out), 8)
        out.unlink()
    return errors, skipped


def report(
    nodes: dict[str, str], errors: dict[str, float], shares: dict[str, float]
) -> list[dict[str, Any]]:
    """`steps[i].sensitivity`: most sensitive first (docs/product.md, "Contract additions")."""
    rows = [
        {
            "node": name,
            "op_type": op_type,
            "error": errors.get(name),
            "time_share": round(shares.get(name, 0.0), 6),
        }
        for name, op_type in nodes.items()
    ]
    # Unmeasured nodes (the budget ran out) last: nothing says they are sensitive.
    return sorted(rows, key=lambda r: (r["error"] is None, -(r["error"] or 0.0)))


def fewest_float(
    ordered: list[str],
    quantize: Quantize,
    evaluate: Callable[[Path], float],
    target: float,
    work: Path,
) -> tuple[list[str], float, list[dict[str, Any]]]:
    """The shortest prefix of `ordered` that, kept float, meets `target`; its cosine; the probes.

    Each probe quantizes every other node and measures the result. The prefix of all nodes is
    the float model (cosine 1): it meets any target, so the search always ends.
    """
    probes: list[dict[str, Any]] = []

    def meets(k: int) -> bool:
        out = work / f"keep-{k}.onnx"
        quantize(out, None, ordered[:k])
        cosine = evaluate(out)
        out.unlink()
        probes.append({"kept_float": k, "cosine_mean": round(cosine, 6)})
        return cosine >= target

    low, high = 0, len(ordered)
    if meets(0):
        return [], probes[-1]["cosine_mean"], probes
    while high - low > 1:  # invariant: low fails, high meets (high = len: all float)
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    met = next((p["cosine_mean"] for p in probes if p["kept_float"] == high), 1.0)
    return ordered[:high], met, probes


def mixed_precision(
    model: Path,
    nodes: dict[str, str],
    quantize: Quantize,
    feeds: dict[str, np.ndarray],
    *,
    threads: int,
    work: Path,
    budget_s: float,
    target: float | None,
) -> tuple[list[str], dict[str, Any], list[dict[str, Any]], list[str]]:
    """Sensitivity of `nodes` and, with a `target`, the fewest to keep float.

    Returns:
        (nodes to keep float, metrics, the sensitivity rows, warnings).
    """
    work.mkdir(exist_ok=True)
    reference = outputs(model, feeds, threads)

    def evaluate(path: Path) -> float:
        return worst_cosine(reference, outputs(path, feeds, threads))

    errors, skipped = node_errors(nodes, quantize, evaluate, work, budget_s)
    rows = report(nodes, errors, time_shares(model, feeds, threads, work))
    samples = len(next(iter(feeds.values()))) if feeds else 0
    metrics: dict[str, Any] = {
        "sensitivity_samples": samples,
        "sensitivity_unmeasured": len(skipped),
    }
    warnings = []
    if skipped:
        warnings.append(
            f"The sensitivity budget measured {len(errors)} of {len(nodes)} nodes; the other "
            f"{len(skipped)} are taken as least sensitive (raise `sensitivity_budget_s`)."
        )
    kept: list[str] = []
    if target is not None:
        order = [r["node"] for r in rows]
        kept, cosine, probes = fewest_float(order, quantize, evaluate, target, work)
        timed = slower_op_types(nodes, kept, quantize, feeds, threads, work)
        for_speed = sorted(n for n, t in nodes.items() if n not in kept and timed[t]["slower"])
        metrics["keep_float"] = {
            "mode": "auto",
            "target_cosine": target,
            "kept_float": kept,
            "cosine_mean": cosine,
            "candidates": len(order),
            "probes": probes,
            "op_type_timing": timed,
            "kept_float_for_speed": for_speed,
        }
        kept = [*kept, *for_speed]
    return kept, metrics, rows, warnings


def _runner(path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], object]:
    opened = ort_session(path, threads)

    def run(feeds: dict[str, np.ndarray]) -> object:
        return opened.run(None, feeds)

    return run


def slower_op_types(
    nodes: dict[str, str],
    kept: list[str],
    quantize: Quantize,
    feeds: dict[str, np.ndarray],
    threads: int,
    work: Path,
) -> dict[str, dict[str, Any]]:
    """Per op type still quantized: p50 of the chosen model and of it with that type kept float,
    timed interleaved, and whether int8 was slower beyond `SPEED_MARGIN`."""
    chosen = work / "chosen.onnx"
    quantize(chosen, None, kept)
    results: dict[str, dict[str, Any]] = {}
    for op_type in sorted({t for n, t in nodes.items() if n not in kept}):
        variant = work / f"float-{op_type}.onnx"
        quantize(variant, None, [*kept, *(n for n, t in nodes.items() if t == op_type)])
        runners = {"int8": _runner(chosen, threads), "float": _runner(variant, threads)}
        stats = measure_latency(runners, feeds, iterations=SPEED_ITERATIONS, time_budget_s=10.0)
        int8, float_ = stats["int8"]["p50"], stats["float"]["p50"]
        results[op_type] = {
            "int8_p50_ms": round(int8, 4),
            "float_p50_ms": round(float_, 4),
            "slower": float_ < int8 * (1 - SPEED_MARGIN),
        }
        variant.unlink()
    chosen.unlink()
    return results
