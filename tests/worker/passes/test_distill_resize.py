"""Distillation on a CNN whose graph has `Resize` and `ConvTranspose` (as mobile detectors and
segmenters do): the student, damaged on purpose, converts, trains and gets closer to its teacher
(measured on unseen inputs by `support.assert_closer_to_teacher`; the network is in
tests/networks.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from networks import UpsamplingCnn
from onnx import numpy_helper
from support import assert_closer_to_teacher

from app.passes.distill import DistillConfig
from worker.passes.distill import DistillPass
from worker.pipeline.tools import onnx_context


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(teacher, damaged student, dataset)."""
    root = tmp_path_factory.mktemp("resize-distill")
    torch.manual_seed(0)
    teacher = root / "teacher.onnx"
    torch.onnx.export(
        UpsamplingCnn().eval(),
        (torch.randn(2, 3, 16, 16),),
        str(teacher),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    proto = onnx.load(str(teacher))
    rng = np.random.default_rng(0)
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 4:  # conv weights: the student starts far from the teacher
            damaged = array + rng.normal(scale=array.std(), size=array.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(damaged, init.name))
    student = root / "student.onnx"
    onnx.save(proto, str(student))
    data = root / "data.npz"
    np.savez(data, x=rng.normal(size=(256, 3, 16, 16)).astype(np.float32))
    return teacher, student, data


def test_the_graph_has_resize_and_conv_transpose(models: tuple[Path, Path, Path]) -> None:
    ops = {n.op_type for n in onnx.load(str(models[0])).graph.node}

    assert {"Resize", "ConvTranspose"} <= ops


def test_a_resize_conv_transpose_student_distils(
    models: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    teacher, student, data = models
    unseen = np.random.default_rng(1).normal(size=(64, 3, 16, 16)).astype(np.float32)
    ctx = onnx_context(
        student, tmp_path, datasets={"d": data}, original_path=teacher, original_format="onnx"
    )
    config = DistillConfig(op="distill", dataset_id="d", epochs=15, lr=3e-3)

    result = DistillPass().run(ctx, config)

    before, after = result.metrics["before"], result.metrics["after"]
    assert result.metrics["agreement_metric"] == "cosine"
    assert after["agreement"] > before["agreement"] + 0.05
    assert after["agreement"] > 0.9
    assert_closer_to_teacher(student, result.output_path, teacher, unseen)
