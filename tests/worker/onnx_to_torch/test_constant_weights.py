"""Weights stored as `Constant` nodes (paddle2onnx, e.g. the PP-OCR models) in our ONNX -> PyTorch
conversion: they train like initializers and `write_back` writes them into their nodes. Each
check runs the same graph and inputs in ONNX Runtime (tests/paddle_style.py builds the network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from paddle_style import export_detector

from worker.onnx_to_torch.module import to_torch, write_back


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path, _ = export_detector(tmp_path_factory.mktemp("paddle") / "detector.onnx")
    return onnx.load(str(path))


def _ort(model: Any, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _torch(module: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_the_network_keeps_every_weight_in_constant_nodes(detector: Any) -> None:
    ops = {n.op_type for n in detector.graph.node}

    assert not detector.graph.initializer
    assert {"Constant", "HardSigmoid", "Resize", "ConvTranspose", "GlobalAveragePool"} <= ops
    assert any(a.name == "group" and a.i > 1 for n in detector.graph.node for a in n.attribute)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 64, 96)])
def test_it_matches_onnx_runtime_at_any_height_and_width(
    detector: Any, shape: tuple[int, ...]
) -> None:
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)

    got, want = _torch(to_torch(detector).eval(), x), _ort(detector, x)

    assert got.shape == want.shape == (shape[0], 1, shape[2], shape[3])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_constant_weights_are_trainable_parameters(detector: Any) -> None:
    made = {n.output[0]: n for n in detector.graph.node if n.op_type == "Constant"}
    weights = {
        n.input[k] for n in detector.graph.node if n.op_type in ("Conv", "ConvTranspose")
        for k in (1, 2) if len(n.input) > k
    }  # fmt: skip
    resize = {n.input[k] for n in detector.graph.node if n.op_type == "Resize" for k in (1, 2)}

    params = to_torch(detector).onnx_parameters()

    assert weights and weights <= set(made)
    assert weights <= set(params)
    assert not resize & set(params)  # roi and scales: shape arithmetic, frozen


def test_write_back_puts_trained_values_into_the_constant_nodes(detector: Any) -> None:
    module = to_torch(detector)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn_like(param))
    x = np.random.default_rng(1).normal(size=(2, 3, 48, 32)).astype(np.float32)

    written = write_back(module.eval(), detector)

    assert [n.op_type for n in written.graph.node] == [n.op_type for n in detector.graph.node]
    assert not written.graph.initializer
    np.testing.assert_allclose(_ort(written, x), _torch(module, x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(_ort(written, x), _ort(detector, x), atol=1e-3)


def test_write_back_keeps_each_constant_name_and_dtype(detector: Any) -> None:
    written = write_back(to_torch(detector), detector)

    for before, after in zip(detector.graph.node, written.graph.node, strict=True):
        if before.op_type != "Constant":
            continue
        old, new = before.attribute[0].t, after.attribute[0].t
        assert (new.name, new.data_type, new.dims) == (old.name, old.data_type, old.dims)
        np.testing.assert_array_equal(numpy_helper.to_array(new), numpy_helper.to_array(old))


def test_a_paddle_style_file_round_trips(detector: Any, tmp_path: Path) -> None:
    path = tmp_path / "written.onnx"
    onnx.save(write_back(to_torch(detector), detector), str(path))

    onnx.checker.check_model(str(path))
