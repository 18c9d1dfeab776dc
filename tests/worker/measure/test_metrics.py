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


def test_accuracy_per_token_of_a_sequence_output() -> None:
    """Token labels (samples x positions) against logits (samples x positions x vocabulary):
    the LLM case, which crashed the job before."""
    logits = np.zeros((2, 3, 5), dtype=np.float32)
    logits[0, :, 1] = 1.0  # predicts 1 everywhere
    logits[1, :, 4] = 1.0  # predicts 4 everywhere
    labels = np.array([[1, 1, 0], [4, 4, 4]], dtype=np.int64)

    assert score("accuracy", logits, labels) == pytest.approx(5 / 6)
    assert score("top5", logits, labels) == 1.0


def test_integer_labels_of_a_two_class_output_are_ids_not_one_hot() -> None:
    outputs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)

    assert score("accuracy", outputs, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert score("accuracy", outputs, np.eye(2)[[0, 1, 1]]) == pytest.approx(2 / 3)
