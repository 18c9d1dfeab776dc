"""Original vs optimized, measured in one process on the same inputs: size, latency, fidelity,
accuracy. Every number here comes from a run; what cannot be run is reported as such."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import JobFailure
from app.jobs.schemas import JobCreate
from worker.benchmark import compare_outputs, measure_latency, rss_bytes
from worker.inputs import dataset_inputs, synthesize_inputs
from worker.onnx_utils import load_checked, make_session, parameter_counts, signature

FIDELITY_SAMPLES = 32
MAX_EVAL_SAMPLES = 10_000
EVAL_BATCH = 64


def compressed_size(path: Path) -> int:
    """Bytes after zlib level 6: what zeros and int8 buy on the wire and in storage."""
    comp, total = zlib.compressobj(6), 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            total += len(comp.compress(chunk))
    return total + len(comp.flush())


def static_facts(path: Path) -> dict[str, Any]:
    model = load_checked(path)
    params, nonzero = parameter_counts(model)
    return {
        "format": "onnx",
        "runtime": "onnxruntime",
        "size_bytes": path.stat().st_size,
        "compressed_size_bytes": compressed_size(path),
        "parameters": params,
        "nonzero_parameters": nonzero,
        "sparsity": round(1 - nonzero / params, 6) if params else None,
    }


def _fixed_batch(inputs: list[dict[str, Any]]) -> int | None:
    shape = inputs[0]["shape"]
    return shape[0] if shape and isinstance(shape[0], int) else None


def run_batched(
    session: Any, feeds: dict[str, np.ndarray], batch: int, fixed: bool
) -> list[np.ndarray]:
    """Run `feeds` through `session` in chunks of `batch` samples; outputs concatenated.

    A model with a fixed batch size gets only whole batches (the remainder is left out).
    """
    n = len(next(iter(feeds.values())))
    stop = n - n % batch if fixed else n
    if stop == 0:
        raise JobFailure("dataset_too_small", f"The model needs batches of {batch} samples.")
    chunks = [
        session.run(None, {k: v[start : start + batch] for k, v in feeds.items()})
        for start in range(0, stop, batch)
    ]
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


class Pair:
    """The baseline and optimized ONNX Runtime sessions, loaded side by side."""

    def __init__(self, original: Path, optimized: Path, threads: int) -> None:
        self.paths = {"baseline": original, "optimized": optimized}
        self.sessions: dict[str, Any] = {}
        self.load_ms: dict[str, float] = {}
        self.rss_delta: dict[str, int] = {}
        for label, path in self.paths.items():
            before = rss_bytes()
            self.sessions[label], self.load_ms[label] = make_session(path, threads)
            self.rss_delta[label] = rss_bytes() - before
        self.inputs, self.outputs = signature(self.sessions["baseline"])
        self.fixed_batch = _fixed_batch(self.inputs)

    def runner(self, label: str) -> Any:
        session = self.sessions[label]
        return lambda feeds: session.run(None, feeds)


def latency(pair: Pair, spec: JobCreate, notes: list[str]) -> dict[str, dict[str, Any]]:
    """Interleaved latency per batch size: `{label: {batch: stats}}`."""
    bench = spec.benchmark
    sizes = list(bench.batch_sizes)
    if pair.fixed_batch is not None and sizes != [pair.fixed_batch]:
        notes.append(
            f"The model has a fixed batch size of {pair.fixed_batch}; only that size was measured."
        )
        sizes = [pair.fixed_batch]
    out: dict[str, dict[str, Any]] = {"baseline": {}, "optimized": {}}
    for batch in sizes:
        feeds = synthesize_inputs(pair.paths["baseline"], batch, bench.input_shapes, seed=batch)
        stats = measure_latency(
            {label: pair.runner(label) for label in out},
            feeds,
            iterations=bench.iterations,
            warmup=bench.warmup,
            time_budget_s=bench.time_budget_s,
        )
        for label in out:
            out[label][str(batch)] = stats[label]
    return out


def _synthetic_feeds(pair: Pair, spec: JobCreate) -> dict[str, np.ndarray]:
    batch = pair.fixed_batch or FIDELITY_SAMPLES
    parts = [
        synthesize_inputs(pair.paths["baseline"], batch, spec.benchmark.input_shapes, seed=1000 + i)
        for i in range(max(1, FIDELITY_SAMPLES // batch))
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def fidelity_and_accuracy(
    pair: Pair, spec: JobCreate, datasets: dict[str, Path]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Outputs of both models on the same inputs (the evaluation set if given)."""
    batch = pair.fixed_batch or EVAL_BATCH
    names = [o["name"] for o in pair.outputs]
    labels = None
    if spec.evaluation is not None:
        feeds, labels = dataset_inputs(
            datasets[spec.evaluation.dataset_id], [i["name"] for i in pair.inputs], MAX_EVAL_SAMPLES
        )
        source = "dataset"
    else:
        feeds, source = _synthetic_feeds(pair, spec), "synthesized"
    fixed = pair.fixed_batch is not None
    ref = run_batched(pair.sessions["baseline"], feeds, batch, fixed)
    cand = run_batched(pair.sessions["optimized"], feeds, batch, fixed)
    fidelity = {
        "inputs": source,
        "samples": len(ref[0]),
        "outputs": compare_outputs(ref, cand, names),
    }
    accuracy = None
    if spec.evaluation is not None:
        if labels is None:
            raise ValueError("the evaluation dataset has no `labels` array")
        from worker.metrics import score

        labels = labels[: len(ref[0])]
        base = score(spec.evaluation.metric, ref[0], labels)
        opt = score(spec.evaluation.metric, cand[0], labels)
        lower_is_better = spec.evaluation.metric in ("mse", "mae")
        accuracy = {
            "metric": spec.evaluation.metric,
            "baseline": base,
            "optimized": opt,
            "drop": (opt - base) if lower_is_better else (base - opt),
            "samples": len(labels),
        }
    return fidelity, accuracy
