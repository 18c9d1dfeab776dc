"""Layer sensitivity and automatic mixed precision for quantization, measured, not estimated.

Inputs: the step's sensitivity inputs (worker/passes/quantize.py chooses them: a real dataset where
the job has one, all of its samples, run in batches as the job's fidelity is, since dynamic int8
computes its activation scales per call; else synthesized ones). A node that is fragile only on
real data (an outlier channel that random inputs never produce) is found only on real data.

Sensitivity: each quantizable node is quantized alone (with the same settings as the step) and
the model run on those inputs beside the float original; a node's `error` is the drop in the
worst output's `cosine_mean` that it causes on its own. Its `time_share` is its share of the
float model's node time in ONNX Runtime's profiler on those inputs.

Mixed precision (`keep_float: auto`): the fewest nodes kept float such that the quantized model
meets the target: every output's `cosine_mean` at least `Target.mean` and, with `Target.sample`,
its worst sample's cosine at least that too (a mean over many samples hides a few broken ones:
under int8 the shortest sentences of a text encoder); with `Target.accuracy_drop` (the job's
`max_accuracy_drop`, on inputs that carry labels), the metric's drop from the float original's
score on those labels at most that. Nodes are tried in the order of measured
fidelity bought per time spent (their errors over their time shares: a float node costs its
float time), found by bisection over that order (each probe a real quantization, measured); all
float is the original, which always meets it. Then each op type still quantized is kept float in
turn and both models are timed interleaved on the same inputs: an op type whose int8 form
measured slower than float in this model, on this machine, by more than `SPEED_MARGIN`, stays
float (keeping a node float never lowers fidelity). Last, the whole chosen model is timed against
the float original at each of the job's benchmark batch sizes: where it is slower beyond
`SPEED_MARGIN` at any of them, int8 does not pay for this model on this CPU (on an AVX2-only CPU
a real mobile CNN's static int8 measured 1.23x slower at batch 1 while no single op type did),
and the step keeps the whole model float, with both timings in its metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.measure.benchmark import compare_outputs, measure_latency
from worker.measure.metrics import drop, score
from worker.ort import session as ort_session

Quantize = Callable[[Path, list[str] | None, list[str]], None]  # (out, include, exclude)
SPEED_MARGIN = 0.05  # float must be this much faster: smaller differences are noise here
SPEED_ITERATIONS = 20
MIN_SHARE = 1e-3  # a node the profiler saw (almost) no time in costs at least this


@dataclass(frozen=True)
class Fidelity:
    """One model's agreement with the float original on the sensitivity inputs."""

    mean: float  # the lowest, over outputs, of the mean per-sample cosine (`cosine_mean`)
    worst: float  # the lowest per-sample cosine of any output (`cosine_min`)
    accuracy_drop: float | None = None  # with labelled inputs: the metric's drop from float's


@dataclass(frozen=True)
class Target:
    """What `keep_float: auto` must reach; a bound that is None is not judged."""

    mean: float | None
    sample: float | None = None
    accuracy_drop: float | None = None

    def met(self, got: Fidelity) -> bool:
        return (
            (self.mean is None or got.mean >= self.mean)
            and (self.sample is None or got.worst >= self.sample)
            and (
                self.accuracy_drop is None
                or (got.accuracy_drop is not None and got.accuracy_drop <= self.accuracy_drop)
            )
        )


@dataclass(frozen=True)
class Inputs:
    """The sensitivity inputs: arrays by input name (first axis = samples), run `batch` at a
    time (the batch the job's fidelity is measured at), and where they came from."""

    feeds: dict[str, np.ndarray]
    batch: int
    source: str  # "dataset <id>", "calibration dataset <id>" or "synthesized"
    labels: np.ndarray | None = None  # one per sample, where the target judges accuracy
    metric: str = "accuracy"  # the job's evaluation metric, scored on the first output

    @property
    def samples(self) -> int:
        return len(next(iter(self.feeds.values()))) if self.feeds else 0

    def at_batch(self, batch: int) -> dict[str, np.ndarray]:
        """`batch` samples, the first ones (repeated where there are fewer): a timing feed."""
        return {k: np.resize(v, (batch, *v.shape[1:])) for k, v in self.feeds.items()}

    def chunks(self) -> list[dict[str, np.ndarray]]:
        step = max(1, self.batch)
        return [
            {k: v[i : i + step] for k, v in self.feeds.items()}
            for i in range(0, max(self.samples, 1), step)
        ]


def outputs(path: Path, inputs: Inputs, threads: int) -> list[np.ndarray]:
    """The model's outputs on every sample, run batch by batch, concatenated."""
    opened = ort_session(path, threads)
    runs = [opened.run(None, chunk) for chunk in inputs.chunks()]
    return [np.concatenate([np.asarray(r[i]) for r in runs]) for i in range(len(runs[0]))]


def fidelity(
    reference: list[np.ndarray], got: list[np.ndarray], inputs: Inputs | None = None
) -> Fidelity:
    """Worst output's `cosine_mean` and worst sample's cosine (an output that cannot be
    compared, e.g. NaN or a changed shape, counts as -1); with labelled `inputs`, the drop of
    their metric on the first output from the reference's score (a first output that cannot be
    scored drops by 1)."""
    names = [f"output_{i}" for i in range(len(reference))]
    compared = compare_outputs(reference, got, names).values()
    means = [o["cosine_mean"] for o in compared]
    worsts = [o["cosine_min"] for o in compared]
    accuracy_drop = None
    if inputs is not None and inputs.labels is not None:
        base = score(inputs.metric, reference[0], inputs.labels)
        try:
            scored = score(inputs.metric, got[0], inputs.labels)
        except ValueError:  # a changed shape cannot be scored
            scored = float("nan")
        accuracy_drop = drop(inputs.metric, base, scored)
        if not np.isfinite(accuracy_drop):
            accuracy_drop = 1.0
    return Fidelity(
        min((-1.0 if v is None else float(v) for v in means), default=1.0),
        min((-1.0 if v is None else float(v) for v in worsts), default=1.0),
        accuracy_drop,
    )


def time_shares(path: Path, inputs: Inputs, threads: int, work: Path) -> dict[str, float]:
    """Each node's share of the summed node time, from ONNX Runtime's profiler (3 runs of the
    first batch)."""
    session = ort_session(path, threads, profile_prefix=work / "profile")
    first = inputs.chunks()[0]
    for _ in range(3):
        session.run(None, first)
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
    evaluate: Callable[[Path], Fidelity],
    work: Path,
    budget_s: float,
) -> tuple[dict[str, Fidelity], list[str]]:
    """Each node's fidelity when quantized alone; the nodes the time budget left unmeasured."""
    measured: dict[str, Fidelity] = {}
    skipped: list[str] = []
    deadline = time.monotonic() + budget_s
    for index, name in enumerate(nodes):
        if time.monotonic() > deadline:
            skipped = list(nodes)[index:]
            break
        out = work / f"one-{index}.onnx"
        quantize(out, [name], [])
        measured[name] = evaluate(out)
        out.unlink()
    return measured, skipped


def report(
    nodes: dict[str, str], measured: dict[str, Fidelity], shares: dict[str, float]
) -> list[dict[str, Any]]:
    """`steps[i].sensitivity`: most sensitive first (docs/product.md, "Contract additions")."""
    rows = [
        {
            "node": name,
            "op_type": op_type,
            "error": round(1.0 - measured[name].mean, 8) if name in measured else None,
            "time_share": round(shares.get(name, 0.0), 6),
        }
        for name, op_type in nodes.items()
    ]
    # Unmeasured nodes (the budget ran out) last: nothing says they are sensitive.
    return sorted(rows, key=lambda r: (r["error"] is None, -(r["error"] or 0.0)))


def keep_order(
    rows: list[dict[str, Any]], measured: dict[str, Fidelity], target: Target
) -> list[str]:
    """The order nodes are kept float in: fidelity bought per time spent. A node's gain is its
    mean and worst-sample cosine drops (and its accuracy drop, where judged), each relative to
    what the target allows; its cost its float time share. Unmeasured nodes last, in the rows'
    order."""
    allowed_mean = max(1.0 - (target.mean if target.mean is not None else -1.0), 1e-6)
    allowed_worst = max(1.0 - (target.sample if target.sample is not None else -1.0), 1e-6)
    allowed_accuracy = max(target.accuracy_drop or 0.0, 1e-3)

    def gain(row: dict[str, Any]) -> float:
        got = measured.get(row["node"])
        if got is None:
            return -1.0
        drops = (1.0 - got.mean) / allowed_mean + (1.0 - got.worst) / allowed_worst
        if target.accuracy_drop is not None and got.accuracy_drop is not None:
            drops += max(got.accuracy_drop, 0.0) / allowed_accuracy
        return drops / max(float(row["time_share"]), MIN_SHARE)

    return [r["node"] for r in sorted(rows, key=lambda r: -gain(r))]


def fewest_float(
    ordered: list[str],
    quantize: Quantize,
    evaluate: Callable[[Path], Fidelity],
    target: Target,
    work: Path,
) -> tuple[list[str], Fidelity, list[dict[str, Any]]]:
    """The shortest prefix of `ordered` that, kept float, meets `target`; its fidelity; the
    probes.

    Each probe quantizes every other node and measures the result. The prefix of all nodes is
    the float model (cosine 1, no accuracy drop): it meets any target, so the search ends.
    """
    probes: list[dict[str, Any]] = []
    seen: dict[int, Fidelity] = {len(ordered): Fidelity(1.0, 1.0, 0.0)}

    def meets(k: int) -> bool:
        out = work / f"keep-{k}.onnx"
        quantize(out, None, ordered[:k])
        seen[k] = evaluate(out)
        out.unlink()
        probes.append({"kept_float": k, **_shown(seen[k])})
        return target.met(seen[k])

    low, high = 0, len(ordered)
    if meets(0):
        return [], seen[0], probes
    while high - low > 1:  # invariant: low fails, high meets (high = len: all float)
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return ordered[:high], seen[high], probes


def mixed_precision(
    model: Path,
    nodes: dict[str, str],
    quantize: Quantize,
    inputs: Inputs,
    *,
    threads: int,
    work: Path,
    budget_s: float,
    target: Target | None,
    speed_batches: tuple[int, ...] = (),
    out: Path | None = None,
) -> tuple[list[str] | None, dict[str, Any], list[dict[str, Any]], list[str]]:
    """Sensitivity of `nodes` and, with a `target`, the fewest to keep float; speed is timed at
    `speed_batches` (the job's benchmark batch sizes; the inputs' batch without them). With a
    target, the chosen model is quantized into `out` (the step's output, timed there, so that
    it is not quantized twice) and left there where it pays.

    Returns:
        (nodes to keep float, or None where the whole int8 model measured slower than float:
        keep the model float, `out` removed; metrics, the sensitivity rows, warnings).
    """
    work.mkdir(exist_ok=True)
    reference = outputs(model, inputs, threads)

    def evaluate(path: Path) -> Fidelity:
        return fidelity(reference, outputs(path, inputs, threads), inputs)

    measured, skipped = node_errors(nodes, quantize, evaluate, work, budget_s)
    rows = report(nodes, measured, time_shares(model, inputs, threads, work))
    metrics: dict[str, Any] = {
        "sensitivity_samples": inputs.samples,
        "sensitivity_batch_size": inputs.batch,
        "sensitivity_inputs": inputs.source,
        "sensitivity_unmeasured": len(skipped),
    }
    warnings = []
    if skipped:
        warnings.append(
            f"The sensitivity budget measured {len(measured)} of {len(nodes)} nodes; the other "
            f"{len(skipped)} are taken as least sensitive (raise `sensitivity_budget_s`)."
        )
    if target is None:
        return [], metrics, rows, warnings
    kept, metrics["keep_float"] = _keep_float(
        nodes, rows, measured, quantize, evaluate, target, inputs, threads, work
    )
    chosen = out or work / "chosen.onnx"
    quantize(chosen, None, kept)
    whole = whole_model_timing(model, chosen, inputs, threads, speed_batches or (inputs.batch,))
    pays = not any(row["slower"] for row in whole)
    metrics["keep_float"] |= {"whole_model_timing": whole, "int8_pays": pays}
    if pays:
        return kept, metrics, rows, warnings
    chosen.unlink()
    warnings.append(slower_warning(whole))
    return None, metrics, rows, warnings


def slower_warning(whole: list[dict[str, Any]]) -> str:
    """What the step says when it keeps the model float because int8 measured slower."""
    timings = "; ".join(
        f"batch {r['batch']}: int8 p50 {r['int8_p50_ms']:g} ms, float {r['float_p50_ms']:g} ms"
        for r in whole
    )
    return (
        f"int8 measured slower than float for this model on this CPU ({timings}), beyond the "
        f"{SPEED_MARGIN:.0%} noise margin: the step keeps the model float (unquantized). "
        "`keep_float.op_type_timing` has each op type's timing."
    )


def _keep_float(
    nodes: dict[str, str],
    rows: list[dict[str, Any]],
    measured: dict[str, Fidelity],
    quantize: Quantize,
    evaluate: Callable[[Path], Fidelity],
    target: Target,
    inputs: Inputs,
    threads: int,
    work: Path,
) -> tuple[list[str], dict[str, Any]]:
    """The nodes kept float (for fidelity, then for speed) and the step's `keep_float` metrics."""
    order = keep_order(rows, measured, target)
    kept, reached, probes = fewest_float(order, quantize, evaluate, target, work)
    timed = slower_op_types(nodes, kept, quantize, inputs, threads, work)
    for_speed = sorted(n for n, t in nodes.items() if n not in kept and timed[t]["slower"])
    return [*kept, *for_speed], {
        "mode": "auto",
        "target_cosine": target.mean,
        "target_sample_cosine": target.sample,
        "target_accuracy_drop": target.accuracy_drop,
        **({"accuracy_metric": inputs.metric} if inputs.labels is not None else {}),
        "order": "measured error per float time share",
        "kept_float": kept,
        **_shown(reached),
        "candidates": len(order),
        "probes": probes,
        "op_type_timing": timed,
        "kept_float_for_speed": for_speed,
    }


def _shown(got: Fidelity) -> dict[str, Any]:
    """A measured fidelity as the step's metrics show it."""
    shown: dict[str, Any] = {"cosine_mean": round(got.mean, 6), "cosine_min": round(got.worst, 6)}
    if got.accuracy_drop is not None:
        shown["accuracy_drop"] = round(got.accuracy_drop, 6)
    return shown


def _runner(path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], object]:
    opened = ort_session(path, threads)

    def run(feeds: dict[str, np.ndarray]) -> object:
        return opened.run(None, feeds)

    return run


def _timed(
    chosen: Path, variant: Path, feeds: dict[str, np.ndarray], threads: int
) -> dict[str, Any]:
    """p50 of `chosen` (int8) and `variant` (more float), timed interleaved on `feeds`, and
    whether int8 was slower beyond `SPEED_MARGIN`."""
    runners = {"int8": _runner(chosen, threads), "float": _runner(variant, threads)}
    stats = measure_latency(runners, feeds, iterations=SPEED_ITERATIONS, time_budget_s=10.0)
    int8, float_ = stats["int8"]["p50"], stats["float"]["p50"]
    return {
        "int8_p50_ms": round(int8, 4),
        "float_p50_ms": round(float_, 4),
        "slower": float_ < int8 * (1 - SPEED_MARGIN),
    }


def whole_model_timing(
    model: Path, chosen: Path, inputs: Inputs, threads: int, batches: tuple[int, ...]
) -> list[dict[str, Any]]:
    """The chosen int8 model against the float `model`, at each batch size."""
    return [{"batch": b, **_timed(chosen, model, inputs.at_batch(b), threads)} for b in batches]


def slower_op_types(
    nodes: dict[str, str],
    kept: list[str],
    quantize: Quantize,
    inputs: Inputs,
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
        first = inputs.chunks()[0]  # one batch, not the whole set
        results[op_type] = _timed(chosen, variant, first, threads)
        variant.unlink()
    chosen.unlink()
    return results
