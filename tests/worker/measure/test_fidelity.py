"""Fidelity of sequence outputs: top-1 agreement at every position and at the last real token."""

from __future__ import annotations

import numpy as np
import pytest

from worker.measure.benchmark import compare_outputs, has_class_axis
from worker.measure.pair import last_positions


def test_sequence_outputs_get_top1_agreement_at_every_position() -> None:
    ref = np.zeros((2, 3, 4))
    ref[:, :, 1] = 1.0
    cand = ref.copy()
    cand[0, 2] = [0, 0, 0, 1.0]  # one of six positions disagrees

    compared = compare_outputs([ref], [cand], ["logits"])["logits"]

    assert compared["top1_agreement"] == 5 / 6
    assert "top1_agreement_last" not in compared


def test_sequence_outputs_are_judged_at_the_last_non_padding_position() -> None:
    ref = np.zeros((2, 3, 4))
    ref[:, :, 1] = 1.0
    cand = ref.copy()
    cand[0, 1] = [0, 0, 0, 1.0]  # sample 0's last real token (position 1) disagrees

    compared = compare_outputs([ref], [cand], ["logits"], last=np.array([1, 2]))["logits"]

    assert compared["top1_agreement_last"] == 0.5


def test_last_positions_follow_the_attention_mask() -> None:
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])

    last = last_positions({"input_ids": np.zeros((3, 4)), "attention_mask": mask})

    assert last is not None
    assert last.tolist() == [1, 3, 0]
    assert last_positions({"input_ids": np.zeros((3, 4))}) is None


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("output", (8, 10), True),  # a classifier
        ("logits", (2, 16, 50), True),  # token scores, named
        ("output_0", (2, 16, 1000), True),  # token scores: the vocabulary's size
        ("last_hidden_state", (2, 16, 384), False),  # an encoder's features
        ("sentence_embedding", (8, 384), False),
        ("output_0", (2, 16, 384), False),  # 3-D, not vocabulary-sized, not named as scores
        ("output", (8, 4096), False),  # too wide for classes, not named as scores
        ("output", (8, 1), False),
    ],
)
def test_only_class_or_token_axes_get_top1(
    name: str, shape: tuple[int, ...], expected: bool
) -> None:
    assert has_class_axis(name, np.zeros(shape), frozenset({1000})) is expected


def test_an_encoders_hidden_states_get_no_top1() -> None:
    ref = np.random.default_rng(0).normal(size=(2, 3, 64))

    compared = compare_outputs([ref], [ref + 0.01], ["last_hidden_state"])["last_hidden_state"]

    assert compared["top1_agreement"] is None
    assert compared["cosine_mean"] > 0.99
