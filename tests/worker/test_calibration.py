"""The calibration batch follows the input size (issue #9).

ONNX Runtime's calibrator runs the graph with every tensor exposed, so a batch's memory is about
the sum of the model's tensors for one sample times the batch: the real PP-OCRv4 detector at
3x640x640, calibrated 16 at a time, peaked at 18.4 GB. The tiny network here (one 3->16
convolution, ReLU, global pooling) at 1024x1024 costs about 140 MiB a sample by the estimate, at
32x32 about 0.14 MiB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.passes.quantize import QuantizeConfig
from worker import calibration
from worker.calibration import (
    CALIBRATION_BATCH,
    CALIBRATION_BATCH_BYTES,
    calibration_reader,
    sample_bytes,
)
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context

CHANNELS = 16


def _conv_model(path: Path, batch: int | str = "batch") -> Path:
    """x [batch, 3, H, W] -> Conv(3->16, 3x3, pad 1) -> Relu -> GlobalAveragePool, H and W
    dynamic: the tensors' size follows the image's."""
    weight = np.random.default_rng(0).standard_normal((CHANNELS, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
            helper.make_node("GlobalAveragePool", ["relu"], ["y"], name="pool"),
        ],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CHANNELS, 1, 1])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _specs(batch: int | str = "batch") -> list[dict[str, object]]:
    return [{"name": "x", "dtype": "float32", "shape": [batch, 3, "h", "w"]}]


def _images(count: int, side: int) -> dict[str, np.ndarray]:
    return {"x": np.zeros((count, 3, side, side), np.float32)}


def test_the_estimate_counts_the_input_and_every_tensor_of_one_sample(tmp_path: Path) -> None:
    model = _conv_model(tmp_path / "conv.onnx")
    side = 64
    floats = 3 * side * side + 2 * CHANNELS * side * side + CHANNELS  # x, conv, relu, y

    assert sample_bytes(model, _images(5, side)) == 4 * floats


def test_small_inputs_keep_batches_of_16(tmp_path: Path) -> None:
    model = _conv_model(tmp_path / "conv.onnx")

    reader = calibration_reader(_images(40, 32), _specs(), "cal", model)

    assert reader.batch == CALIBRATION_BATCH == 16
    assert [len(b["x"]) for b in iter(reader.get_next, None)] == [16, 16, 8]


def test_large_inputs_shrink_the_batch_to_fit_the_bound(tmp_path: Path) -> None:
    model = _conv_model(tmp_path / "conv.onnx")
    arrays = _images(12, 1024)

    reader = calibration_reader(arrays, _specs(), "cal", model)

    per_sample = sample_bytes(model, arrays)
    assert 1 < reader.batch < CALIBRATION_BATCH
    assert reader.batch * per_sample <= CALIBRATION_BATCH_BYTES < (reader.batch + 1) * per_sample
    assert sum(len(b["x"]) for b in iter(reader.get_next, None)) == 12  # every sample still fed


def test_a_sample_past_the_bound_is_calibrated_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _conv_model(tmp_path / "conv.onnx")
    monkeypatch.setattr(calibration, "CALIBRATION_BATCH_BYTES", 1000)

    assert calibration_reader(_images(3, 32), _specs(), "cal", model).batch == 1


def test_a_fixed_batch_dimension_still_wins(tmp_path: Path) -> None:
    model = _conv_model(tmp_path / "conv.onnx", batch=4)

    reader = calibration_reader(_images(10, 1024), _specs(4), "cal", model)

    assert (reader.batch, reader.samples) == (4, 8)


def test_without_the_model_the_reader_batches_16(tmp_path: Path) -> None:
    assert calibration_reader(_images(20, 1024), _specs(), "cal").batch == CALIBRATION_BATCH


def test_static_quantization_reports_the_batch_it_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _conv_model(tmp_path / "conv.onnx")
    data = tmp_path / "cal.npz"
    rng = np.random.default_rng(1)
    np.savez(data, x=rng.standard_normal((20, 3, 32, 32)).astype(np.float32))
    per_sample = sample_bytes(model, _images(1, 32))
    monkeypatch.setattr(calibration, "CALIBRATION_BATCH_BYTES", 3 * per_sample)
    work = tmp_path / "work"
    work.mkdir()
    ctx = onnx_context(model, work, threads=1, datasets={"cal": data})
    config = QuantizeConfig(op="quantize", mode="static", calibration_dataset_id="cal")

    result = QuantizePass().run(ctx, config)

    assert result.metrics["calibration_batch_size"] == 3
    assert result.metrics["calibration_samples"] == 20
    assert result.metrics["nodes_quantized"] == 1
