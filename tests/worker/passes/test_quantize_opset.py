"""Static int8 on an old-opset export: per-channel QDQ needs opset 13 (DequantizeLinear `axis`),
so the pass converts the opset first instead of failing with ONNX Runtime's raw InvalidGraph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from networks import onnx_conv_net

from app.passes.quantize import QuantizeConfig
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context


@pytest.fixture
def opset11(tmp_path: Path) -> tuple[Path, Path]:
    model = onnx_conv_net(tmp_path / "cnn11.onnx", 11)
    data = tmp_path / "cal.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(32, 3, 16, 16)).astype(np.float32))
    return model, data


def test_per_channel_static_int8_converts_an_old_opset_first(
    opset11: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = opset11
    ctx = onnx_context(model, tmp_path / "work", datasets={"cal": data})
    (tmp_path / "work").mkdir()
    config = QuantizeConfig(op="quantize", mode="static", calibration_dataset_id="cal")

    result = QuantizePass().run(ctx, config)

    quantized = onnx.load(str(result.output_path))
    opset = next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx"))
    assert (result.metrics["opset_before"], result.metrics["opset"], opset) == (11, 13, 13)
    assert result.metrics["nodes_quantized"] >= 2
    assert sorted(p.name for p in result.output_path.parent.iterdir()) == ["quantized.onnx"]
    x = np.random.default_rng(2).normal(size=(2, 3, 16, 16)).astype(np.float32)
    got = ort.InferenceSession(str(result.output_path)).run(None, {"x": x})[0]
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    assert got.shape == want.shape and np.all(np.isfinite(got))


def test_per_tensor_static_int8_keeps_the_opset(opset11: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = opset11
    ctx = onnx_context(model, tmp_path / "work", datasets={"cal": data})
    (tmp_path / "work").mkdir()
    config = QuantizeConfig(
        op="quantize", mode="static", calibration_dataset_id="cal", per_channel=False
    )

    result = QuantizePass().run(ctx, config)

    assert "opset_before" not in result.metrics
