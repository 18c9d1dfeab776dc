"""The `distill` pass on a real task: a digits CNN teacher and a damaged copy as the student.

Setup (scikit-learn's bundled digits, 8x8 images as 1x8x8): the 1797 images are split by a seeded
permutation into 1000 to train the teacher, 500 for the distillation dataset (the pass holds out
20% of those) and 297 test images that neither the teacher nor the pass sees, on which this file
measures accuracy itself with onnxruntime. The student is the teacher with the 75% weakest (L1)
convolution channels and hidden neurons zeroed, as magnitude channel pruning without recovery
leaves it (accuracy collapses to about a third; zeroing 60% of conv channels only lost a few
points, the network is that redundant): distillation has to bring it back, which the easy
"fine-tune an intact student" setup of FIELD-NOTES.md could not show. A second, much smaller
student of another architecture learns from scratch. Margins: `MIN_GAIN` accuracy points on the
test images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError

from app.core.errors import JobFailure
from app.passes.distill import DistillConfig
from worker.passes.base import PassResult
from worker.passes.distill import DistillPass
from worker.pipeline.tools import onnx_context

MIN_TEACHER_ACCURACY = 0.95
MIN_GAIN = 0.2  # accuracy points gained on the test images by distillation
THREADS = 1  # torch's threads crawl on a shared 2-core machine; the pass sets what it is given
DAMAGE = 0.75  # fraction of conv channels and hidden neurons zeroed in the student


class DigitsCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = torch.nn.Linear(64 * 4 * 4, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.max_pool2d(torch.relu(self.conv2(y)), 2)
        return self.fc2(torch.relu(self.fc1(y.flatten(1))))


def _export(module: torch.nn.Module, path: Path) -> Path:
    torch.onnx.export(
        module.eval(),
        (torch.randn(2, 1, 8, 8),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", max=4096)}},
        external_data=False,
    )
    return path


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(images))
    parts = {"teacher": order[:1000], "distill": order[1000:1500], "test": order[1500:]}
    return {k: (images[v], data.target[v].astype(np.int64)) for k, v in parts.items()}


@pytest.fixture(scope="module")
def models(digits: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Teacher (ONNX and .pt2) and the damaged student (ONNX)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    # One thread: OpenMP threads busy-spin and crawl when other processes share the cores.
    torch.set_num_threads(1)
    teacher = DigitsCnn()
    x, y = (torch.from_numpy(a) for a in digits["teacher"])
    optimizer = torch.optim.Adam(teacher.parameters(), lr=2e-3)
    for _ in range(30):
        for index in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(teacher(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("distill")
    paths = {"teacher": _export(teacher, folder / "teacher.onnx")}
    batch = {"x": {0: torch.export.Dim("batch", max=4096)}}
    program = torch.export.export(teacher.eval(), (torch.randn(2, 1, 8, 8),), dynamic_shapes=batch)
    torch.export.save(program, str(folder / "teacher.pt2"))
    paths["teacher_pt2"] = folder / "teacher.pt2"
    student = DigitsCnn()
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for layer in (student.conv1, student.conv2, student.fc1):
            norms = layer.weight.reshape(layer.weight.shape[0], -1).abs().sum(1)
            weakest = norms.argsort()[: int(DAMAGE * len(norms))]
            layer.weight[weakest] = 0.0
            layer.bias[weakest] = 0.0
    paths["student"] = _export(student, folder / "student.onnx")
    return paths


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


def _predict(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _accuracy(path: Path, digits: dict[str, Any]) -> float:
    images, targets = digits["test"]
    return float(np.mean(_predict(path, images).argmax(-1) == targets))


def agreement(path: Path, teacher: Path, digits: dict[str, Any]) -> float:
    images, _ = digits["test"]
    return float(np.mean(_predict(path, images).argmax(-1) == _predict(teacher, images).argmax(-1)))


@pytest.fixture(scope="module")
def labelled_run(
    models: dict[str, Path], digits: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> PassResult:
    work = tmp_path_factory.mktemp("labelled")
    npz = _npz(digits, work / "digits.npz")
    return _distill(models["student"], models["teacher"], npz, work)


def test_teacher_is_accurate_and_the_student_is_damaged(
    models: dict[str, Path], digits: dict[str, Any]
):
    teacher, student = _accuracy(models["teacher"], digits), _accuracy(models["student"], digits)

    assert teacher > MIN_TEACHER_ACCURACY
    assert student < teacher - 2 * MIN_GAIN


def test_distillation_recovers_accuracy_on_unseen_images(
    labelled_run: PassResult, models: dict[str, Path], digits: dict[str, Any]
):
    before = _accuracy(models["student"], digits)

    after = _accuracy(labelled_run.output_path, digits)

    assert after > before + MIN_GAIN
    assert after > MIN_TEACHER_ACCURACY - 0.05


def test_agreement_with_the_teacher_rises(
    labelled_run: PassResult, models: dict[str, Path], digits: dict[str, Any]
):
    before = agreement(models["student"], models["teacher"], digits)

    after = agreement(labelled_run.output_path, models["teacher"], digits)

    assert after > before + MIN_GAIN
    metrics = labelled_run.metrics
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
    labelled_run: PassResult, models: dict[str, Path]
):
    student = onnx.load(str(models["student"]))

    result = onnx.load(str(labelled_run.output_path))

    onnx.checker.check_model(result)
    assert [n.op_type for n in result.graph.node] == [n.op_type for n in student.graph.node]
    shapes = {i.name: (i.data_type, tuple(i.dims)) for i in student.graph.initializer}
    assert {i.name: (i.data_type, tuple(i.dims)) for i in result.graph.initializer} == shapes
    assert labelled_run.output_format == "onnx"
    assert not list(labelled_run.output_path.parent.glob("*.data"))


def test_without_labels_agreement_still_rises(
    models: dict[str, Path], digits: dict[str, Any], tmp_path: Path
):
    npz = _npz(digits, tmp_path / "unlabelled.npz", labels=False)

    result = _distill(models["student"], models["teacher"], npz, tmp_path)

    after = agreement(result.output_path, models["teacher"], digits)
    assert after > agreement(models["student"], models["teacher"], digits) + MIN_GAIN
    assert _accuracy(result.output_path, digits) > _accuracy(models["student"], digits) + MIN_GAIN
    assert result.metrics["loss"]["alpha"] == 1.0
    assert "accuracy" not in result.metrics["after"]
    assert any("alpha forced to 1" in w for w in result.warnings)


def test_pt2_teacher_runs_in_torch(models: dict[str, Path], digits: dict[str, Any], tmp_path: Path):
    npz = _npz(digits, tmp_path / "digits.npz")

    result = _distill(models["student"], models["teacher_pt2"], npz, tmp_path, "pt2", epochs=5)

    teacher = result.metrics["teacher"]
    assert (teacher["format"], teacher["runtime"]) == ("pt2", "torch")
    assert teacher["accuracy"] > MIN_TEACHER_ACCURACY
    assert result.metrics["after"]["agreement"] > result.metrics["before"]["agreement"] + MIN_GAIN
    assert _accuracy(result.output_path, digits) > _accuracy(models["student"], digits) + MIN_GAIN


class TinyCnn(torch.nn.Module):
    """A student about 100x smaller than the teacher, of another architecture."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def test_a_much_smaller_student_learns_from_the_teacher(
    models: dict[str, Path], digits: dict[str, Any], tmp_path: Path
):
    torch.manual_seed(0)
    student = _export(TinyCnn(), tmp_path / "tiny.onnx")
    npz = _npz(digits, tmp_path / "digits.npz")

    result = _distill(student, models["teacher"], npz, tmp_path, epochs=20, lr=1e-2)

    assert _accuracy(result.output_path, digits) > _accuracy(student, digits) + 3 * MIN_GAIN
    assert result.metrics["after"]["agreement"] > 0.8


class FeatureMap(torch.nn.Module):
    """A network whose output is a feature map, not logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


def test_non_classifier_outputs_use_mse_and_cosine(digits: dict[str, Any], tmp_path: Path):
    torch.manual_seed(0)
    teacher, student = (
        _export(FeatureMap(), tmp_path / "t.onnx"),
        _export(FeatureMap(), tmp_path / "s.onnx"),
    )
    npz = _npz(digits, tmp_path / "digits.npz")

    result = _distill(student, teacher, npz, tmp_path, lr=1e-2)

    assert result.metrics["loss"]["soft"] == ["mse"]
    assert result.metrics["agreement_metric"] == "cosine"
    assert result.metrics["after"]["agreement"] > result.metrics["before"]["agreement"] + 0.2
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

    result = _distill(student, transformer_onnx, tmp_path / "ids.npz", tmp_path, epochs=5)

    assert result.metrics["agreement_metric"] == "top1"
    assert result.metrics["after"]["agreement"] > result.metrics["before"]["agreement"]
    assert result.metrics["write_back_max_abs_error"] < 1e-4


def test_unsupported_student_op_fails_before_training(
    models: dict[str, Path], digits: dict[str, Any], tmp_path: Path
):
    model = onnx.load(str(models["student"]))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Shrink"
    relu.domain = "com.example"
    student = tmp_path / "odd.onnx"
    onnx.save(model, str(student))

    with pytest.raises(JobFailure) as caught:
        _distill(student, models["teacher"], _npz(digits, tmp_path / "d.npz"), tmp_path)

    assert caught.value.code == "unsupported_op"
    assert "com.example.Shrink" in caught.value.detail


def test_student_with_other_outputs_is_refused(
    models: dict[str, Path], digits: dict[str, Any], tmp_path: Path
):
    student = _export(FeatureMap(), tmp_path / "features.onnx")

    with pytest.raises(JobFailure) as caught:
        _distill(student, models["teacher"], _npz(digits, tmp_path / "d.npz"), tmp_path)

    assert caught.value.code == "distill_failed"
    assert "do not match" in caught.value.detail


def test_labels_out_of_range_are_refused(
    models: dict[str, Path], digits: dict[str, Any], tmp_path: Path
):
    images, targets = digits["distill"]
    np.savez(tmp_path / "bad.npz", image=images, labels=targets + 10)

    with pytest.raises(JobFailure) as caught:
        _distill(models["student"], models["teacher"], tmp_path / "bad.npz", tmp_path)

    assert caught.value.code == "invalid_dataset"


def test_unknown_dataset_is_refused(
    models: dict[str, Path], digits: dict[str, Any], tmp_path: Path
):
    npz = _npz(digits, tmp_path / "digits.npz")

    with pytest.raises(JobFailure) as caught:
        _distill(models["student"], models["teacher"], npz, tmp_path, dataset_id="other")

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
