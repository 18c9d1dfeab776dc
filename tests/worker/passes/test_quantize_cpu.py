"""`quantize` follows the worker's CPU: 7-bit weights (`reduce_range`) where ONNX Runtime's u8s8
kernels saturate (x86 without VNNI), the full int8 range where they do not. Each CPU kind's path
runs here whatever this machine is, with the flags injected (`MODELPRESS_CPU_FLAGS`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from app.passes.quantize import QuantizeConfig
from worker import cpu
from worker.passes.base import PassResult
from worker.passes.quantize import PORTABILITY_WARNING, SATURATION_WARNING, QuantizePass
from worker.pipeline.tools import onnx_context

AVX2 = "avx2,fma,f16c"
VNNI = "avx2,fma,f16c,avx512f,avx512_vnni"


def _quantize(
    model: Path, work: Path, flags: str, monkeypatch: pytest.MonkeyPatch, **fields: object
) -> PassResult:
    monkeypatch.setenv(cpu.FLAGS_ENV, flags)
    work.mkdir(parents=True)
    return QuantizePass().run(onnx_context(model, work), QuantizeConfig(op="quantize", **fields))


def _has_vnni() -> bool:
    """Whether this machine's own CPU (not the injected flags) has VNNI int8 kernels."""
    return cpu.int8_choice(cpu.cpu_info(injected=False)).kernels == "vnni"


def _int8_weights(path: Path) -> np.ndarray:
    model = onnx.load(str(path))
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    return np.concatenate([a.ravel().astype(np.int32) for a in arrays if a.dtype == np.int8])


def test_without_vnni_weights_are_quantized_to_seven_bits(
    mlp_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _quantize(mlp_onnx, tmp_path / "w", AVX2, monkeypatch)

    weights = _int8_weights(result.output_path)
    assert result.metrics["reduce_range"] is True
    assert result.metrics["reduce_range_source"] == "cpu"
    assert result.metrics["int8_kernels"] == "avx2"
    assert weights.size > 0
    assert np.abs(weights).max() <= 64  # 7 bits, symmetric: 255 * 64 * 2 < 2**15


def test_with_vnni_weights_use_the_full_int8_range(
    mlp_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _quantize(mlp_onnx, tmp_path / "w", VNNI, monkeypatch)

    weights = _int8_weights(result.output_path)
    assert result.metrics["reduce_range"] is False
    assert result.metrics["int8_kernels"] == "vnni"
    assert np.abs(weights).max() > 64
    assert PORTABILITY_WARNING in result.warnings


def test_the_spec_overrides_the_cpu_and_is_warned_where_it_saturates(
    mlp_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _quantize(mlp_onnx, tmp_path / "w", AVX2, monkeypatch, reduce_range=False)

    assert result.metrics["reduce_range"] is False
    assert result.metrics["reduce_range_source"] == "spec"
    assert SATURATION_WARNING in result.warnings


@pytest.mark.parametrize("flags", [AVX2, VNNI], ids=["avx2", "vnni"])
def test_each_cpu_path_keeps_the_transformer_faithful(
    transformer_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str
) -> None:
    """The AVX2 path's 7-bit weights compute the same on either CPU kind (no sum saturates), so
    its fidelity is measured on any machine. The VNNI path's full-range weights are only faithful
    where the kernels do not saturate: on a CPU without VNNI its fidelity cannot be measured (its
    file carries the warning that says so), only its choice (the tests above)."""
    result = _quantize(transformer_onnx, tmp_path / "w", flags, monkeypatch)
    if flags == VNNI and not _has_vnni():
        assert PORTABILITY_WARNING in result.warnings
        pytest.skip("full-range int8 saturates on this CPU (no VNNI): run on a VNNI CPU")
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 100, (8, 16)).astype(np.int64)}

    outputs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        for p in (transformer_onnx, result.output_path)
    ]

    ref, got = (o.reshape(len(o), -1) for o in outputs)
    cosine = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.min() > 0.99
