"""Original vs optimized, measured in one process on the same inputs: size, latency, fidelity,
accuracy. Each model runs in its own runtime (a PyTorch upload is measured in torch, an ONNX
result in ONNX Runtime). Every number here comes from a run; what cannot be run says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import JobFailure
from app.core.storage import compressed_size
from app.jobs.schemas import JobCreate
from worker import onnx_io
from worker.measure.benchmark import compare_outputs, measure_latency
from worker.measure.inputs import dataset_inputs, synthesize_from_specs
from worker.measure.metrics import drop, score
from worker.ort import load_checked, parameter_counts
from worker.runtimes import loaded as runtimes
from worker.runtimes.torch_programs import parameter_counts as torch_counts

FIDELITY_SAMPLES = 32
MAX_EVAL_SAMPLES = 10_000
EVAL_BATCH = 64
LABELS = ("baseline", "optimized")


def _parameters(loaded: runtimes.Loaded) -> tuple[int | None, int | None]:
    if loaded.format == "tvm":
        return None, None  # weights are compiled into the library: not countable from it
    if loaded.format == "onnx":
        # Every ONNX file of a job is a staged upload or a pass's output: its external data,
        # if any, was checked to lie beside it (worker/onnx_io.py).
        return parameter_counts(load_checked(loaded.path, bundled=True), loaded.path.parent)

    return torch_counts(loaded.run.module)


def static_facts(loaded: runtimes.Loaded) -> dict[str, Any]:
    params, nonzero = _parameters(loaded)
    return {
        "format": loaded.format,
        "runtime": loaded.runtime,
        "provider": loaded.provider,
        "size_bytes": (
            onnx_io.model_bytes(loaded.path)  # with its external data
            if loaded.format == "onnx"
            else loaded.path.stat().st_size
        ),
        "compressed_size_bytes": compressed_size(loaded.path),
        "parameters": params,
        "nonzero_parameters": nonzero,
        "sparsity": round(1 - nonzero / params, 6) if params and nonzero is not None else None,
        "load_ms": round(loaded.load_ms, 3),
        "load_rss_bytes": loaded.rss_delta_bytes,
    }


class Pair:
    """The original and the optimized model, loaded side by side, fed the same inputs."""

    def __init__(
        self, models: dict[str, runtimes.Loaded], specs: list[dict[str, Any]], vocab: dict[str, int]
    ) -> None:
        self.models, self.specs, self.vocab = models, specs, vocab
        self.token_dims = frozenset(vocab.values())  # a token axis has a vocabulary's size
        first = specs[0]["shape"] if specs and specs[0]["shape"] else None
        self.fixed_batch: int | None = first[0] if first and isinstance(first[0], int) else None

    def feeds(
        self, batch: int, shapes: dict[str, list[int]] | None, seed: int
    ) -> dict[str, np.ndarray]:
        return synthesize_from_specs(self.specs, batch, shapes, seed, self.vocab)


def batch_sizes(pair: Pair, spec: JobCreate, notes: list[str]) -> list[int]:
    sizes = list(spec.benchmark.batch_sizes)
    if pair.fixed_batch is not None and sizes != [pair.fixed_batch]:
        notes.append(
            f"The model has a fixed batch size of {pair.fixed_batch}; only that size was measured."
        )
        sizes = [pair.fixed_batch]
    return sizes


def latency(
    pair: Pair, spec: JobCreate, sizes: list[int], control: runtimes.Loaded | None
) -> dict[str, dict[str, Any]]:
    """Interleaved latency per batch size: `{label: {batch: stats}}`; with a control (a second
    copy of the original) also under `control`."""
    bench = spec.benchmark
    runners = {label: pair.models[label].run for label in LABELS}
    if control is not None:
        runners["control"] = control.run
    out: dict[str, dict[str, Any]] = {label: {} for label in runners}
    for batch in sizes:
        stats = measure_latency(
            runners,
            pair.feeds(batch, bench.input_shapes, seed=batch),
            iterations=bench.iterations,
            warmup=bench.warmup,
            time_budget_s=bench.time_budget_s,
        )
        for label in runners:
            out[label][str(batch)] = stats[label]
    return out


def noise(lat: dict[str, dict[str, Any]]) -> dict[str, float]:
    """p50 of the control over p50 of the original, per batch size (1.0 = no noise)."""
    return {
        b: round(lat["control"][b]["p50"] / s["p50"], 4)
        for b, s in lat["baseline"].items()
        if s.get("p50") and b in lat.get("control", {})
    }


SPATIAL_ALIGNMENT = 32  # the largest stride a second size keeps (detectors: multiples of 32)


def halved(size: int) -> int:
    """About half of `size`, still a multiple of the largest power of two (up to 32) dividing it:
    a detector that takes 736 (23 x 32) needs a multiple of 32, and 368 fails inside it. Half of
    such a size lies between two multiples (11.5 x 32): the smaller one is taken (736 -> 352).
    A size with no smaller aligned multiple (32, 16, 1) is simply halved; a model that refuses
    that has the check skipped with a note (`fidelity_and_accuracy`)."""
    step = min(size & -size, SPATIAL_ALIGNMENT)
    aligned = step * (size // (2 * step)) if size > 0 else 0
    return aligned if aligned > 0 else max(1, size // 2)


def second_shape(pair: Pair, spec: JobCreate) -> dict[str, list[int]] | None:
    """Other sizes for the dynamic non-batch axes (about half the benchmark's, see `halved`), or
    None without any."""
    given = spec.benchmark.input_shapes or {}
    shapes: dict[str, list[int]] = {}
    for s in pair.specs:
        dims = s["shape"] or []
        if not any(isinstance(d, str) for d in dims[1:]):
            continue
        feed = pair.feeds(1, given, seed=0)[s["name"]]
        shapes[s["name"]] = [
            1,
            *[
                halved(n) if isinstance(d, str) else n
                for d, n in zip(dims[1:], feed.shape[1:], strict=True)
            ],
        ]
    return shapes or None


def _synthetic_feeds(pair: Pair, spec: JobCreate) -> dict[str, np.ndarray]:
    batch = pair.fixed_batch or FIDELITY_SAMPLES
    parts = [
        pair.feeds(batch, spec.benchmark.input_shapes, seed=1000 + i)
        for i in range(max(1, FIDELITY_SAMPLES // batch))
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def fidelity_and_accuracy(
    pair: Pair,
    spec: JobCreate,
    datasets: dict[str, Path],
    output_names: list[str],
    notes: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Outputs of both models on the same inputs (the evaluation set if given), and at a second
    shape of the dynamic axes; what could not be checked is said in `notes` (the report's)."""
    batch = pair.fixed_batch or EVAL_BATCH
    labels = None
    if spec.evaluation is not None:
        names = [s["name"] for s in pair.specs]
        feeds, labels = dataset_inputs(
            datasets[spec.evaluation.dataset_id], names, MAX_EVAL_SAMPLES
        )
        source = "dataset"
    else:
        feeds, source = _synthetic_feeds(pair, spec), "synthesized"
    ref, cand = _both(pair, feeds, batch)
    names = (
        output_names if len(output_names) == len(ref) else [f"output_{i}" for i in range(len(ref))]
    )
    fidelity: dict[str, Any] = {
        "inputs": source,
        "samples": len(ref[0]),
        "batch_size": batch,
        "outputs": compare_outputs(ref, cand, names, last_positions(feeds), pair.token_dims),
    }
    other = second_shape(pair, spec)
    if other is not None:
        fidelity["second_shape"] = _at_second_shape(pair, other, batch, names, notes)
    if spec.evaluation is None:
        return fidelity, None
    if labels is None:
        raise JobFailure("invalid_dataset", "The evaluation dataset has no `labels` array.")
    accuracy = _accuracy(spec.evaluation.metric, ref[0], cand[0], labels[: len(ref[0])])
    # Dynamic int8 computes activation scales per call: results depend on the batch, so say it.
    return fidelity, {**accuracy, "batch_size": batch}


SECOND_SHAPE_SKIPPED = (
    "Fidelity at a second input shape ({shapes}) was not checked: the original does not run there "
    "({error}). Models with size rules (multiples of a stride) may need `benchmark.input_shapes`."
)
SECOND_SHAPE_BROKEN = (
    "The optimized model fails at input shape {shapes}, where the original runs ({error}): "
    "it may only work at the benchmark's shape"
)


def _at_second_shape(
    pair: Pair,
    other: dict[str, list[int]],
    batch: int,
    names: list[str],
    notes: list[str] | None,
) -> dict[str, Any]:
    """The fidelity comparison at `other`; where a model raises at that shape (a detector whose
    sides must be multiples of 32 may), the check is skipped with a note instead of failing the
    job: the benchmark's own shape was measured already."""
    feeds = pair.feeds(FIDELITY_SAMPLES if pair.fixed_batch is None else batch, other, seed=7)
    shapes = {k: [len(next(iter(feeds.values()))), *v[1:]] for k, v in other.items()}
    fixed = pair.fixed_batch is not None
    outputs: list[list[Any]] = []
    for label in LABELS:
        try:
            outputs.append(runtimes.run_batched(pair.models[label], feeds, batch, fixed))
        except Exception as exc:  # each runtime raises its own types; a refusal is a finding
            error = f"{type(exc).__name__}: {exc}"[:300]
            template = SECOND_SHAPE_BROKEN if label == "optimized" else SECOND_SHAPE_SKIPPED
            note = template.format(shapes=shapes, error=error)
            if label == "optimized":  # a finding the verdict's guard judges, not a note
                return {"input_shapes": shapes, "skipped": note, "optimized_fails": True}
            if notes is not None:
                notes.append(note)
            return {"input_shapes": shapes, "skipped": note}
    ref, cand = outputs
    return {
        "input_shapes": shapes,
        "outputs": compare_outputs(ref, cand, names, last_positions(feeds), pair.token_dims),
    }


def last_positions(feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """Each sample's last non-padding position, from an attention-mask input (None without one)."""
    mask = next((v for k, v in feeds.items() if "mask" in k.lower() and np.ndim(v) == 2), None)
    if mask is None:
        return None
    ones = np.asarray(mask) != 0
    # The last position whose mask is set (right padding); 0 for an all-padding row.
    return np.where(ones.any(1), ones.shape[1] - 1 - np.argmax(ones[:, ::-1], axis=1), 0)


def _both(pair: Pair, feeds: dict[str, np.ndarray], batch: int) -> tuple[list[Any], list[Any]]:
    fixed = pair.fixed_batch is not None
    ref = runtimes.run_batched(pair.models["baseline"], feeds, batch, fixed)
    return ref, runtimes.run_batched(pair.models["optimized"], feeds, batch, fixed)


def _accuracy(metric: str, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    base, opt = score(metric, ref, labels), score(metric, cand, labels)
    return {
        "metric": metric,
        "baseline": base,
        "optimized": opt,
        "drop": drop(metric, base, opt),
        "samples": len(labels),
    }
