"""Fidelity of sequence outputs (top-1 agreement at every position and at the last real token),
and the check at a second input shape: sizes that keep a stride-32 model's alignment, and a
shape a model refuses skipped with a note instead of failing the job (issue #9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from app.jobs.schemas import JobCreate
from worker.measure.benchmark import compare_outputs, has_class_axis
from worker.measure.inputs import onnx_input_specs
from worker.measure.pair import Pair, fidelity_and_accuracy, halved, last_positions
from worker.report.build import verdict
from worker.runtimes import loaded as runtimes


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


# ------------------------------------------------ the second shape (issue #9: stride-32 models)


def _space_to_depth(path: Path, block: int | None) -> Path:
    """x [batch, 3, h, w] -> SpaceToDepth(block) -> mean per sample: ONNX Runtime refuses sides
    that are not multiples of `block`, as a detector whose sides must be multiples of 32 does
    (None: the mean alone, which runs at any size)."""
    nodes = [helper.make_node("ReduceMean", ["t"], ["y"], axes=[1, 2, 3], keepdims=0)]
    if block is None:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["t"]))
    else:
        nodes.insert(0, helper.make_node("SpaceToDepth", ["x"], ["t"], blocksize=block))
    graph = helper.make_graph(
        nodes,
        "s2d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _pair(baseline: Path, optimized: Path) -> Pair:
    paths = {"baseline": baseline, "optimized": optimized}
    specs = onnx_input_specs(baseline)
    return Pair({k: runtimes.load(p, "onnx", specs, 1) for k, p in paths.items()}, specs, {})


def _spec(side: int) -> JobCreate:
    return JobCreate.model_validate(
        {
            "model_id": "m",
            "steps": [{"op": "optimize"}],
            "benchmark": {"input_shapes": {"x": [1, 3, side, side]}},
        }
    )


@pytest.mark.parametrize(
    ("size", "second"),
    [(736, 352), (640, 320), (224, 96), (128, 64), (100, 48), (7, 3), (32, 16), (1, 1)],
)
def test_halved_sizes_keep_the_power_of_two_that_divides_them(size: int, second: int) -> None:
    assert halved(size) == second


def test_a_stride_32_model_is_checked_at_a_second_shape_it_accepts(tmp_path: Path) -> None:
    model = _space_to_depth(tmp_path / "s2d32.onnx", 32)
    notes: list[str] = []

    fidelity, _ = fidelity_and_accuracy(_pair(model, model), _spec(224), {}, ["y"], notes)

    second = fidelity["second_shape"]
    assert second["input_shapes"]["x"][1:] == [3, 96, 96]  # 112 would fail inside the model
    assert second["outputs"]["y"]["cosine_min"] > 0.9999
    assert notes == []


def test_a_model_that_refuses_the_second_shape_is_skipped_with_a_note(tmp_path: Path) -> None:
    model = _space_to_depth(tmp_path / "s2d32.onnx", 32)  # at 32: no smaller multiple of 32
    notes: list[str] = []

    fidelity, _ = fidelity_and_accuracy(_pair(model, model), _spec(32), {}, ["y"], notes)

    assert fidelity["outputs"]["y"]["cosine_min"] > 0.9999  # the benchmark's shape is checked
    assert "outputs" not in fidelity["second_shape"]
    assert fidelity["second_shape"]["input_shapes"]["x"][1:] == [3, 16, 16]
    assert len(notes) == 1
    assert "was not checked" in notes[0] and "[32, 3, 16, 16]" in notes[0]
    assert fidelity["second_shape"]["skipped"] == notes[0]


def test_an_optimized_model_that_breaks_at_the_second_shape_is_not_recommended(
    tmp_path: Path,
) -> None:
    """The original runs there, the result does not: a broken result, which the guard judges."""
    baseline = _space_to_depth(tmp_path / "mean.onnx", None)  # runs at any size
    optimized = _space_to_depth(tmp_path / "s2d48.onnx", 48)  # 96 = 2 x 48; 32 is not
    notes: list[str] = []

    fidelity, _ = fidelity_and_accuracy(_pair(baseline, optimized), _spec(96), {}, ["y"], notes)

    assert fidelity["second_shape"]["input_shapes"]["x"][1:] == [3, 32, 32]
    assert fidelity["second_shape"]["optimized_fails"] is True
    assert notes == []
    judged = verdict(None, {"speedup": {"1": 1.0}}, {}, None, fidelity)
    assert judged["met"] is False
    assert judged["notes"][0].startswith("Not recommended: The optimized model fails at input")
