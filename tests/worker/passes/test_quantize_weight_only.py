"""`quantize` `mode: weight_only`: 4/8-bit block-quantized MatMul weights and embedding tables
through ONNX Runtime's MatMulNBits quantizer, on a tiny decoder-shaped graph (an embedding, an
FFN with a residual, an LM head: the weights an LLM's bytes are in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from networks import onnx_decoder

from app.passes.quantize import QuantizeConfig
from worker.passes.base import PassResult
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context
from worker.precision.nbits import CONTRIB_WARNING

VOCAB, DIM, FFN = 512, 128, 256


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_decoder(tmp_path_factory.mktemp("decoder") / "decoder.onnx", VOCAB, DIM, FFN)


def _run(
    decoder: Path, work: Path, datasets: dict[str, Path] | None = None, **fields: Any
) -> PassResult:
    work.mkdir(parents=True)
    ctx = onnx_context(decoder, work, datasets=datasets)
    return QuantizePass().run(ctx, QuantizeConfig(op="quantize", mode="weight_only", **fields))


def _logits(path: Path, ids: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids}
    )[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_int4_rtn_shrinks_every_weight_and_stays_close(decoder: Path, tmp_path: Path) -> None:
    result = _run(decoder, tmp_path / "w")

    ops = [n.op_type for n in onnx.load(str(result.output_path)).graph.node]
    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert ops.count("MatMulNBits") == 3 and ops.count("GatherBlockQuantized") == 1
    assert result.metrics["nodes_quantized"] == 4 and result.metrics["nodes_kept_float"] == 0
    assert result.metrics["size_bytes_after"] <= 0.2 * result.metrics["size_bytes_before"]
    assert 4.0 < result.metrics["bits_per_weight"] < 5.5  # 4 bits plus a scale and zero per 32
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.98
    assert CONTRIB_WARNING in result.warnings


def test_int8_keeps_the_embedding_float_and_says_so(decoder: Path, tmp_path: Path) -> None:
    result = _run(decoder, tmp_path / "w", bits=8)

    ops = [n.op_type for n in onnx.load(str(result.output_path)).graph.node]
    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert ops.count("MatMulNBits") == 3 and "Gather" in ops
    assert 8.0 < result.metrics["bits_per_weight"] < 9.5
    assert any("Embedding tables (Gather) stay float" in w for w in result.warnings)
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.999


def test_hqq_quantizes_the_matmuls(decoder: Path, tmp_path: Path) -> None:
    result = _run(decoder, tmp_path / "w", algorithm="hqq")

    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert result.metrics["algorithm"] == "hqq"
    assert result.metrics["nodes_quantized"] == 3
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.98


def test_gptq_calibrates_on_the_dataset(decoder: Path, tmp_path: Path) -> None:
    data = tmp_path / "cal.npz"
    np.savez(data, input_ids=np.random.default_rng(2).integers(0, VOCAB, (32, 16)))

    result = _run(
        decoder, tmp_path / "w", {"cal": data}, algorithm="gptq", calibration_dataset_id="cal"
    )

    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert result.metrics["nodes_quantized"] == 3
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.98


def test_excluded_nodes_stay_float(decoder: Path, tmp_path: Path) -> None:
    result = _run(decoder, tmp_path / "w", exclude_nodes=["lm_head"])

    assert result.metrics["float_nodes"] == ["lm_head"]
    assert result.metrics["nodes_quantized"] == 3
