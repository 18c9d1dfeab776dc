"""The `distill` pass on a real task: a digits CNN teacher and a damaged copy as the student.

Setup (scikit-learn's bundled digits, 8x8 images as 1x8x8): the 1797 images are split by a seeded
permutation into 1000 to train the teacher, 500 for the distillation dataset (the pass holds out
20% of those) and 297 test images that neither the teacher nor the pass sees, on which this file
measures accuracy itself with onnxruntime. The student is the teacher with the 75% weakest (L1)
convolution channels and hidden neurons zeroed, as magnitude channel pruning without recovery
leaves it (accuracy collapses to about a third; zeroing 60% of conv channels only lost a few
points, the network is that redundant): distillation has to bring it back, which the easy
"fine-tune an intact student" setup of docs/field-notes.md could not show. A second, much smaller
student of another architecture learns from scratch. Margins: `MIN_GAIN` accuracy points on the
test images. The networks and the teacher/student fixtures are in tests/networks.py and
tests/worker/passes/conftest.py; what distillation must have done is asserted by the `assert_*`
helpers of tests/support.py, which test_noop_guard.py proves fail on a pass that does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from networks import FeatureMap, TinyCnn, export_digits
from pydantic import ValidationError
from support import (
    accuracy,
    assert_accuracy_gain,
    assert_agreement_gain,
    assert_closer_to_teacher,
    assert_weights_changed,
)

from app.core.errors import JobFailure
from app.passes.distill import DistillConfig
from worker.passes.base import PassResult
from worker.passes.distill import DistillPass
from worker.pipeline.tools import onnx_context

MIN_TEACHER_ACCURACY = 0.95
MIN_GAIN = 0.2  # accuracy points gained on the test images by distillation
THREADS = 1  # torch's threads crawl on a shared 2-core machine; the pass sets what it is given


def _npz(digits: dict[str, Any], path: Path, labels: bool = True) -> Path:
    images, targets = digits["distill"]
    arrays = {"image": images, **({"labels": targets} if labels else {})}
    np.savez(path, **arrays)
    return path


def _distill(
    student: Path, teacher: Path, npz: Path, work: Path, teacher_format: str = "onnx", **fields: Any
) -> PassResult:
    ctx = onnx_context(
        student,
        work,
        threads=THREADS,
        datasets={"d": npz},
        original_path=teacher,
        original_format=teacher_format,
    )
    config = DistillConfig(op="distill", **{"dataset_id": "d", "epochs": 10, **fields})
    return DistillPass().run(ctx, config)


@pytest.fixture(scope="module")
def labelled_run(
    distill_models: dict[str, Path],
    digits_split: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> PassResult:
    work = tmp_path_factory.mktemp("labelled")
    npz = _npz(digits_split, work / "digits.npz")
    return _distill(distill_models["student"], distill_models["teacher"], npz, work)


def test_teacher_is_accurate_and_the_student_is_damaged(
    distill_models: dict[str, Path], digits_split: dict[str, Any]
):
    images, labels = digits_split["test"]

    teacher = accuracy(distill_models["teacher"], images, labels)
    student = accuracy(distill_models["student"], images, labels)

    assert teacher > MIN_TEACHER_ACCURACY
    assert student < teacher - 2 * MIN_GAIN


def test_distillation_recovers_accuracy_on_unseen_images(
    labelled_run: PassResult, distill_models: dict[str, Path], digits_split: dict[str, Any]
):
    images, labels = digits_split["test"]

    after = accuracy(labelled_run.output_path, images, labels)

    assert_accuracy_gain(
        distill_models["student"], labelled_run.output_path, images, labels, MIN_GAIN
    )
    assert after > MIN_TEACHER_ACCURACY - 0.05


def test_agreement_with_the_teacher_rises(
    labelled_run: PassResult, distill_models: dict[str, Path], digits_split: dict[str, Any]
):
    student, teacher = distill_models["student"], distill_models["teacher"]

    metrics = labelled_run.metrics

    assert_agreement_gain(
        student, labelled_run.output_path, teacher, digits_split["test"][0], MIN_GAIN
    )
    assert metrics["after"]["agreement"] > metrics["before"]["agreement"] + MIN_GAIN
    assert metrics["after"]["accuracy"] > metrics["before"]["accuracy"] + MIN_GAIN


def test_metrics_report_the_run(labelled_run: PassResult):
    metrics = labelled_run.metrics

    assert metrics["agreement_metric"] == "top1"
    assert metrics["loss"] == {
        "soft": ["kl * T^2"],
        "hard": "cross_entropy",
        "alpha": 0.5,
        "temperature": 4.0,
        "labels": True,
    }
    assert metrics["samples"] == {"train": 400, "validation": 100}
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 11))
    assert all(e["wall_s"] > 0 and e["loss"] > 0 for e in metrics["epochs"])
    assert metrics["epochs"][-1]["loss"] < metrics["epochs"][0]["loss"]
    assert metrics["teacher"]["runtime"] == "onnxruntime"
    assert metrics["teacher"]["accuracy"] > MIN_TEACHER_ACCURACY
    assert metrics["write_back_max_abs_error"] < 1e-4
    assert labelled_run.warnings == []


def test_result_is_the_student_graph_with_new_weights(
    labelled_run: PassResult, distill_models: dict[str, Path]
):
    student = onnx.load(str(distill_models["student"]))

    result = onnx.load(str(labelled_run.output_path))

    onnx.checker.check_model(result)
    assert [n.op_type for n in result.graph.node] == [n.op_type for n in student.graph.node]
    shapes = {i.name: (i.data_type, tuple(i.dims)) for i in student.graph.initializer}
    assert {i.name: (i.data_type, tuple(i.dims)) for i in result.graph.initializer} == shapes
    assert_weights_changed(distill_models["student"], labelled_run.output_path)
    assert labelled_run.output_format == "onnx"
    assert not list(labelled_run.output_path.parent.glob("*.data"))


def test_without_labels_agreement_still_rises(
    distill_models: dict[str, Path], digits_split: dict[str, Any], tmp_path: Path
):
    npz = _npz(digits_split, tmp_path / "unlabelled.npz", labels=False)
    student, teacher = distill_models["student"], distill_models["teacher"]

    result = _distill(student, teacher, npz, tmp_path)

    images, labels = digits_split["test"]
    assert_agreement_gain(student, result.output_path, teacher, images, MIN_GAIN)
    assert_accuracy_gain(student, result.output_path, images, labels, MIN_GAIN)
    assert result.metrics["loss"]["alpha"] == 1.0
    assert "accuracy" not in result.metrics["after"]
    assert any("alpha forced to 1" in w for w in result.warnings)


def test_pt2_teacher_runs_in_torch(
    distill_models: dict[str, Path], digits_split: dict[str, Any], tmp_path: Path
):
    npz = _npz(digits_split, tmp_path / "digits.npz")
    student = distill_models["student"]

    result = _distill(student, distill_models["teacher_pt2"], npz, tmp_path, "pt2", epochs=5)

    teacher = result.metrics["teacher"]
    assert (teacher["format"], teacher["runtime"]) == ("pt2", "torch")
    assert teacher["accuracy"] > MIN_TEACHER_ACCURACY
    assert result.metrics["after"]["agreement"] > result.metrics["before"]["agreement"] + MIN_GAIN
    assert_accuracy_gain(student, result.output_path, *digits_split["test"], MIN_GAIN)


def test_a_much_smaller_student_learns_from_the_teacher(
    distill_models: dict[str, Path], digits_split: dict[str, Any], tmp_path: Path
):
    torch.manual_seed(0)
    student = export_digits(TinyCnn(), tmp_path / "tiny.onnx")
    npz = _npz(digits_split, tmp_path / "digits.npz")

    result = _distill(student, distill_models["teacher"], npz, tmp_path, epochs=20, lr=1e-2)

    assert_accuracy_gain(student, result.output_path, *digits_split["test"], 3 * MIN_GAIN)
    assert result.metrics["after"]["agreement"] > 0.8


def test_non_classifier_outputs_use_mse_and_cosine(digits_split: dict[str, Any], tmp_path: Path):
    torch.manual_seed(0)
    teacher, student = (
        export_digits(FeatureMap(), tmp_path / "t.onnx"),
        export_digits(FeatureMap(), tmp_path / "s.onnx"),
    )
    npz = _npz(digits_split, tmp_path / "digits.npz")

    result = _distill(student, teacher, npz, tmp_path, lr=1e-2)

    assert result.metrics["loss"]["soft"] == ["mse"]
    assert result.metrics["agreement_metric"] == "cosine"
    assert result.metrics["after"]["agreement"] > result.metrics["before"]["agreement"] + 0.2
    assert_closer_to_teacher(student, result.output_path, teacher, digits_split["test"][0])
    assert any("not a classifier" in w for w in result.warnings)


def test_transformer_over_token_ids_without_labels(transformer_onnx: Path, tmp_path: Path):
    model = onnx.load(str(transformer_onnx))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) > 1:
            value = onnx.numpy_helper.to_array(init)
            noisy = value + 0.3 * value.std() * rng.standard_normal(value.shape)
            init.CopyFrom(onnx.numpy_helper.from_array(noisy.astype(np.float32), init.name))
    student = tmp_path / "noisy.onnx"
    onnx.save(model, str(student))
    np.savez(tmp_path / "ids.npz", input_ids=rng.integers(0, 1000, (300, 16)))
    unseen = rng.integers(0, 1000, (200, 16))

    result = _distill(student, transformer_onnx, tmp_path / "ids.npz", tmp_path, epochs=5)

    assert result.metrics["agreement_metric"] == "top1"
    assert result.metrics["after"]["agreement"] > result.metrics["before"]["agreement"]
    assert_closer_to_teacher(student, result.output_path, transformer_onnx, unseen)
    assert result.metrics["write_back_max_abs_error"] < 1e-4


def test_unsupported_student_op_fails_before_training(
    distill_models: dict[str, Path], digits_split: dict[str, Any], tmp_path: Path
):
    model = onnx.load(str(distill_models["student"]))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Shrink"
    relu.domain = "com.example"
    student = tmp_path / "odd.onnx"
    onnx.save(model, str(student))

    with pytest.raises(JobFailure) as caught:
        _distill(
            student, distill_models["teacher"], _npz(digits_split, tmp_path / "d.npz"), tmp_path
        )

    assert caught.value.code == "unsupported_op"
    assert "com.example.Shrink" in caught.value.detail


def test_student_with_other_outputs_is_refused(
    distill_models: dict[str, Path], digits_split: dict[str, Any], tmp_path: Path
):
    student = export_digits(FeatureMap(), tmp_path / "features.onnx")

    with pytest.raises(JobFailure) as caught:
        _distill(
            student, distill_models["teacher"], _npz(digits_split, tmp_path / "d.npz"), tmp_path
        )

    assert caught.value.code == "distill_failed"
    assert "do not match" in caught.value.detail


def test_labels_out_of_range_are_refused(
    distill_models: dict[str, Path], digits_split: dict[str, Any], tmp_path: Path
):
    images, targets = digits_split["distill"]
    np.savez(tmp_path / "bad.npz", image=images, labels=targets + 10)

    with pytest.raises(JobFailure) as caught:
        _distill(
            distill_models["student"], distill_models["teacher"], tmp_path / "bad.npz", tmp_path
        )

    assert caught.value.code == "invalid_dataset"


def test_unknown_dataset_is_refused(
    distill_models: dict[str, Path], digits_split: dict[str, Any], tmp_path: Path
):
    npz = _npz(digits_split, tmp_path / "digits.npz")

    with pytest.raises(JobFailure) as caught:
        _distill(
            distill_models["student"], distill_models["teacher"], npz, tmp_path, dataset_id="other"
        )

    assert caught.value.code == "invalid_dataset"


def test_config_is_strict_and_documented():
    with pytest.raises(ValidationError):
        DistillConfig(op="distill", dataset_id="d", epochs=5, unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        DistillConfig(op="distill", dataset_id="d", epochs=1000)

    config = DistillConfig(op="distill", dataset_id="d")

    assert (config.temperature, config.epochs, config.lr, config.batch_size) == (4.0, 5, 1e-3, 64)
    assert all(field.description for field in DistillConfig.model_fields.values())
    with pytest.raises(ValidationError):
        config.epochs = 3  # type: ignore[misc]
