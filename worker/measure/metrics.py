"""Evaluation metrics on a model's first output against the dataset's `labels`."""

from __future__ import annotations

import numpy as np


def _class_ids(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Class ids from labels that are ids (one per sample, or per position of a sequence:
    shape = outputs' without the class axis) or one-hot / soft scores (outputs' shape)."""
    if labels.ndim == outputs.ndim and labels.shape[-1] == outputs.shape[-1] and outputs.ndim > 1:
        return labels.argmax(axis=-1)
    return labels.astype(np.int64).reshape(outputs.shape[:-1])


def score(metric: str, outputs: np.ndarray, labels: np.ndarray) -> float:
    """`accuracy` and `top5` over class scores (per sample, or per token of a sequence output);
    `mse`, `mae` and `cosine` against targets."""
    if metric == "accuracy":
        return float((outputs.argmax(axis=-1) == _class_ids(labels, outputs)).mean())
    if metric == "top5":
        top = np.argsort(-outputs, axis=-1)[..., :5]
        return float((top == _class_ids(labels, outputs)[..., None]).any(axis=-1).mean())
    if metric == "cosine":
        a = outputs.astype(np.float64).reshape(len(labels), -1)
        b = labels.astype(np.float64).reshape(len(labels), -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return float(((a * b).sum(1) / np.where(norms == 0, 1.0, norms)).mean())
    diff = outputs.astype(np.float64).reshape(labels.shape) - labels.astype(np.float64)
    if metric == "mse":
        return float((diff**2).mean())
    if metric == "mae":
        return float(np.abs(diff).mean())
    raise ValueError(f"unknown metric {metric}")


LOWER_IS_BETTER = ("mse", "mae")


def drop(metric: str, baseline: float, optimized: float) -> float:
    """How much worse `optimized` scores than `baseline`: the fall in accuracy (or cosine), the
    rise in error for `mse`/`mae`. Negative where it scores better."""
    return (optimized - baseline) if metric in LOWER_IS_BETTER else (baseline - optimized)
