"""`Resize` and `ConvTranspose` (with `output_shape` / `auto_pad`) in our ONNX -> PyTorch
conversion, each checked against ONNX Runtime on the same graph and inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from worker.onnx_to_torch.module import to_torch


def _graph(node: Any, x_shape: list[int], inits: list[Any], opset: int = 19) -> Any:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _both(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    with torch.no_grad():
        got = to_torch(model).eval()(torch.from_numpy(x)).numpy()
    return want, got


def _resize(attrs: dict[str, Any], scales: list[float] | None, sizes: list[int] | None) -> Any:
    inits = [numpy_helper.from_array(np.array([], dtype=np.float32), "roi")]
    inputs = ["x", "roi"]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, dtype=np.float32), "scales"))
        inputs.append("scales")
    else:
        inits.append(numpy_helper.from_array(np.array([], dtype=np.float32), "scales"))
        inits.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), "sizes"))
        inputs += ["scales", "sizes"]
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    return _graph(node, [2, 3, 5, 7], inits)


RESIZE_CASES = [
    ({"mode": "nearest"}, [1, 1, 2, 2], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     [1, 1, 2, 3], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}, None, [2, 3, 9, 4]),
    ({"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, [1, 1, 1.5, 0.5], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn",
      "nearest_mode": "ceil"}, None, [2, 3, 11, 13]),
    ({"mode": "linear"}, [1, 1, 2, 2], None),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [2, 3, 9, 16]),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None,
     [2, 3, 1, 10]),
    ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, [1, 1, 0.6, 1.7], None),
]  # fmt: skip


@pytest.mark.parametrize(("attrs", "scales", "sizes"), RESIZE_CASES)
def test_resize_matches_onnx_runtime(
    attrs: dict[str, Any], scales: list[float] | None, sizes: list[int] | None
) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 7)).astype(np.float32)

    want, got = _both(_resize(attrs, scales, sizes), x)

    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resize_with_an_unsupported_mode_is_refused() -> None:
    model = _resize({"mode": "cubic"}, [1, 1, 2, 2], None)

    with pytest.raises(Exception, match="Resize mode cubic"):
        to_torch(model)


def _conv_transpose(attrs: dict[str, Any]) -> Any:
    weight = np.random.default_rng(1).normal(size=(3, 4, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    return _graph(node, [1, 3, 6, 5], [numpy_helper.from_array(weight, "w")])


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "output_shape": [13, 11]},
        {"strides": [2, 2], "output_shape": [12, 10]},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [2, 1], "auto_pad": "VALID"},
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]},
    ],
    ids=["output-shape-odd", "output-shape-even", "same-upper", "same-lower", "valid", "pads"],
)
def test_conv_transpose_matches_onnx_runtime(attrs: dict[str, Any]) -> None:
    x = np.random.default_rng(0).normal(size=(1, 3, 6, 5)).astype(np.float32)

    want, got = _both(_conv_transpose(attrs), x)

    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
