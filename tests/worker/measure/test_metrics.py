"""Evaluation metrics against independent (hand or sklearn) computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    mean_absolute_error,
    mean_squared_error,
    top_k_accuracy_score,
)

from worker.measure.metrics import score


@pytest.fixture
def logits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((200, 10)).astype(np.float32), rng.integers(0, 10, 200)


def test_accuracy_matches_sklearn(logits: tuple[np.ndarray, np.ndarray]) -> None:
    outputs, labels = logits

    assert score("accuracy", outputs, labels) == pytest.approx(
        accuracy_score(labels, outputs.argmax(1))
    )


def test_accuracy_takes_one_hot_labels(logits: tuple[np.ndarray, np.ndarray]) -> None:
    outputs, labels = logits

    assert score("accuracy", outputs, np.eye(10)[labels]) == score("accuracy", outputs, labels)


def test_top5_matches_sklearn(logits: tuple[np.ndarray, np.ndarray]) -> None:
    outputs, labels = logits

    expected = top_k_accuracy_score(labels, outputs, k=5, labels=np.arange(10))

    assert score("top5", outputs, labels) == pytest.approx(expected)


def test_mse_and_mae_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    outputs, targets = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))

    assert score("mse", outputs, targets) == pytest.approx(mean_squared_error(targets, outputs))
    assert score("mae", outputs, targets) == pytest.approx(mean_absolute_error(targets, outputs))


def test_cosine_is_the_mean_per_sample_cosine() -> None:
    outputs = np.array([[1.0, 0.0], [1.0, 1.0]])
    targets = np.array([[1.0, 0.0], [1.0, 0.0]])

    assert score("cosine", outputs, targets) == pytest.approx((1.0 + 1 / np.sqrt(2)) / 2)
