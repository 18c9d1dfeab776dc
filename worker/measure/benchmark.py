"""Measure latency and output fidelity of model runners, and the worker's memory use.

Latency is measured with the candidates interleaved in bursts (A, B, A, B, ...) on the same
inputs, so every candidate sees the same machine noise. Each timed burst follows a short sleep
and one untimed call: ONNX Runtime and OpenMP threads busy-spin after a call, and back-to-back
interleaving of sessions on few cores otherwise distorts timings 2-10x.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable

import numpy as np

Runner = Callable[[dict[str, np.ndarray]], object]

_SETTLE_S = 0.02
_PERCENTILES = (50, 90, 95, 99)


def measure_latency(
    runners: dict[str, Runner],
    inputs: dict[str, np.ndarray],
    *,
    iterations: int,
    warmup: int = 3,
    min_iterations: int = 5,
    time_budget_s: float = 30.0,
    burst: int = 5,
) -> dict[str, dict]:
    """Time each runner on the same inputs, interleaved in bursts.

    Stops when every runner has ``iterations`` timings, or once ``time_budget_s`` (counted from
    the first warm-up call) is spent and every runner has at least ``min_iterations``.

    Returns:
        Per label: mean, std, min, max, p50, p90, p95, p99 in milliseconds, the number of
        timed iterations, and throughput in samples per second.
    """
    if not runners:
        raise ValueError("no runners to measure")
    if iterations < 1 or burst < 1 or warmup < 0:
        raise ValueError("iterations and burst must be positive and warmup not negative")
    floor = min(min_iterations, iterations)
    deadline = time.perf_counter() + time_budget_s
    for run in runners.values():
        for _ in range(warmup):
            run(inputs)
    timings: dict[str, list[int]] = {label: [] for label in runners}
    while any(len(done) < iterations for done in timings.values()):
        for label, run in runners.items():
            count = min(burst, iterations - len(timings[label]))
            if count > 0:
                timings[label].extend(_timed_burst(run, inputs, count))
        spent = time.perf_counter() >= deadline
        if spent and all(len(done) >= floor for done in timings.values()):
            break
    batch = _batch_size(inputs)
    return {label: _latency_stats(done, batch) for label, done in timings.items()}


def compare_outputs(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    names: list[str],
    last: np.ndarray | None = None,
    token_dims: frozenset[int] = frozenset(),
) -> dict[str, dict]:
    """Compare a candidate's outputs with the reference's, output by output.

    Cosine similarity is taken per sample (samples along the first axis, flattened); outputs of
    rank 0 or 1 count as one sample. Errors and cosines are None when the shapes differ or the
    values are not finite (``nan_or_inf`` then tells why). ``top1_agreement`` compares the argmax
    along the last axis of outputs that have a class or token axis (`has_class_axis`): classifiers
    (2-D) and token scores (3-D, at every position); with ``last`` (each sample's last non-padding
    position) ``top1_agreement_last`` compares it there only: a decoder's next-token choice.
    ``token_dims`` are the model's vocabulary sizes (its embedding tables' rows).

    Raises:
        ValueError: the three lists differ in length.
    """
    if not len(reference) == len(candidate) == len(names):
        raise ValueError(
            f"{len(reference)} reference outputs, {len(candidate)} candidate outputs and "
            f"{len(names)} names: they must match"
        )
    return {
        name: _compare_one(
            np.asarray(ref), np.asarray(cand), has_class_axis(name, ref, token_dims), last
        )
        for name, ref, cand in zip(names, reference, candidate, strict=True)
    }


SCORE_NAMES = ("logit", "prob", "score", "class", "pred")
FEATURE_NAMES = ("embed", "hidden", "pool", "feature", "state")
MAX_CLASSES = 1000  # a 2-D output wider than this, not named as scores, is taken as features


def has_class_axis(name: str, output: np.ndarray, token_dims: frozenset[int]) -> bool:
    """Whether the last axis holds classes or tokens, so that its argmax is the model's answer
    (an embedding's argmax is not: comparing it would flag faithful encoders)."""
    shape, lowered = np.shape(output), name.lower()
    if len(shape) not in (2, 3) or shape[-1] < 2:
        return False
    if any(k in lowered for k in SCORE_NAMES) or shape[-1] in token_dims:
        return True
    if any(k in lowered for k in FEATURE_NAMES):
        return False
    return len(shape) == 2 and shape[-1] <= MAX_CLASSES


def rss_bytes() -> int:
    """Return this process's current resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Return this process's peak resident set size in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed_burst(run: Runner, inputs: dict[str, np.ndarray], count: int) -> list[int]:
    # Let the previous runner's spinning threads go idle, then wake this runner's threads.
    time.sleep(_SETTLE_S)
    run(inputs)
    elapsed = []
    for _ in range(count):
        start = time.perf_counter_ns()
        run(inputs)
        elapsed.append(time.perf_counter_ns() - start)
    return elapsed


def _batch_size(inputs: dict[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()), None)
    if first is None or np.ndim(first) == 0:
        return 1
    return int(np.shape(first)[0])


def _latency_stats(elapsed_ns: list[int], batch: int) -> dict:
    ms = np.asarray(elapsed_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = np.percentile(ms, _PERCENTILES)
    mean = float(ms.mean())
    return {
        "mean": mean,
        "std": float(ms.std()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "iterations": len(elapsed_ns),
        "throughput": batch * 1000.0 / mean if mean > 0 else None,
    }


def _compare_one(
    reference: np.ndarray, candidate: np.ndarray, class_axis: bool, last: np.ndarray | None
) -> dict:
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    result: dict = {
        "max_abs_error": None,
        "mean_abs_error": None,
        "cosine_min": None,
        "cosine_mean": None,
        "top1_agreement": None,
        "nan_or_inf": bool(not np.all(np.isfinite(cand))),
        "shape_match": ref.shape == cand.shape,
    }
    if not result["shape_match"] or ref.size == 0:
        return result
    error = np.abs(ref - cand)
    cosines = _cosines(ref, cand)
    result["max_abs_error"] = _finite(error.max())
    result["mean_abs_error"] = _finite(error.mean())
    result["cosine_min"] = _finite(cosines.min())
    result["cosine_mean"] = _finite(cosines.mean())
    if class_axis:
        agree = np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)
        result["top1_agreement"] = float(agree.mean())
        if ref.ndim == 3 and last is not None and len(last) == len(ref):
            at = np.clip(last, 0, ref.shape[1] - 1)
            result["top1_agreement_last"] = float(agree[np.arange(len(ref)), at].mean())
    return result


def _cosines(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    samples = 1 if ref.ndim <= 1 else ref.shape[0]
    a, b = ref.reshape(samples, -1), cand.reshape(samples, -1)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (norm_a == 0) & (norm_b == 0)
    one_zero = (norm_a == 0) ^ (norm_b == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.einsum("ij,ij->i", a, b) / (norm_a * norm_b)
    cosine = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cosine))
    return np.clip(cosine, -1.0, 1.0)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
