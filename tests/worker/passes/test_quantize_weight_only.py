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
from worker.precision.nbits import CONTRIB_WARNING, head_nodes

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


def _bits(path: Path) -> dict[str, int]:
    """Each quantized node's width, by name."""
    return {
        n.name: next((a.i for a in n.attribute if a.name == "bits"), 4)
        for n in onnx.load(str(path)).graph.node
        if n.op_type in ("MatMulNBits", "GatherBlockQuantized")
    }


def test_int4_hqq_with_the_head_at_8_bits_and_an_rtn_embedding(
    decoder: Path, tmp_path: Path
) -> None:
    result = _run(decoder, tmp_path / "w", algorithm="hqq", head_bits=8)

    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert _bits(result.output_path) == {"embed_Q4": 4, "up_Q4": 4, "down_Q4": 4, "lm_head_Q8": 8}
    assert result.metrics["algorithm"] == "hqq"
    assert result.metrics["head_nodes"] == ["lm_head"] and result.metrics["head_bits"] == 8
    assert result.metrics["nodes_by_bits"] == {"4": 3, "8": 1}
    assert result.metrics["nodes_quantized"] == 4 and result.metrics["nodes_kept_float"] == 0
    # The head is a third of this tiny model's weights (of SmolLM2-135M's, a sixth).
    assert result.metrics["size_bytes_after"] <= 0.25 * result.metrics["size_bytes_before"]
    # hqq ~6 bits (float scale and zero per 32), the rtn table ~5.1, the head ~8.3 (blocks of 128)
    assert 6.0 < result.metrics["bits_per_weight"] < 7.0
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.99
    assert CONTRIB_WARNING in result.warnings


@pytest.mark.parametrize("fields", [{}, {"head_bits": 4}], ids=["default", "head_bits=4"])
def test_int4_rtn_quantizes_every_weight_at_4_bits(
    decoder: Path, tmp_path: Path, fields: dict[str, Any]
) -> None:
    result = _run(decoder, tmp_path / "w", **fields)

    ops = [n.op_type for n in onnx.load(str(result.output_path)).graph.node]
    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert ops.count("MatMulNBits") == 3 and ops.count("GatherBlockQuantized") == 1
    assert set(_bits(result.output_path).values()) == {4}
    assert result.metrics["head_nodes"] == [] and result.metrics["head_bits"] == 4
    assert result.metrics["nodes_by_bits"] == {"4": 4}
    assert result.metrics["size_bytes_after"] <= 0.2 * result.metrics["size_bytes_before"]
    assert 4.0 < result.metrics["bits_per_weight"] < 5.5  # 4 bits plus a scale and zero per 32
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.98


def test_int4_rtn_with_head_bits_8_keeps_only_the_head_at_8_bits(
    decoder: Path, tmp_path: Path
) -> None:
    result = _run(decoder, tmp_path / "w", head_bits=8)

    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert _bits(result.output_path) == {"embed_Q4": 4, "up_Q4": 4, "down_Q4": 4, "lm_head_Q8": 8}
    assert result.metrics["head_nodes"] == ["lm_head"] and result.metrics["head_bits"] == 8
    assert result.metrics["nodes_by_bits"] == {"4": 3, "8": 1}
    # 2/3 of the weights at ~5.1 bits, the head (a third here) at ~8.3 (blocks of 128)
    assert 6.0 < result.metrics["bits_per_weight"] < 6.5
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.99


def _graph(tail: list[onnx.NodeProto], out: str) -> onnx.ModelProto:
    """x -> MatMul(w) named `proj` -> `tail` -> `out`."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((8, 8), np.float32), n) for n in ("w", "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="proj"), *tail]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))


_ADD_THEN_RESHAPE = [
    onnx.helper.make_node("Add", ["m", "b"], ["a"]),
    onnx.helper.make_node("Reshape", ["a", "shape"], ["y"]),
]


@pytest.mark.parametrize(
    ("tail", "found"),
    [
        ([], ["proj"]),
        ([onnx.helper.make_node("Add", ["b", "m"], ["y"])], ["proj"]),  # a bias
        (_ADD_THEN_RESHAPE, ["proj"]),
        ([onnx.helper.make_node("Add", ["m", "x"], ["y"])], []),  # a residual: not a head
        ([onnx.helper.make_node("Softmax", ["m"], ["y"])], []),
    ],
)
def test_head_nodes_finds_the_matmul_that_makes_an_output(
    tail: list[onnx.NodeProto], found: list[str]
) -> None:
    out = tail[-1].output[0] if tail else "m"
    assert head_nodes(_graph(tail, out)) == found


def test_head_bits_8_is_a_no_op_on_a_model_without_a_head(tmp_path: Path) -> None:
    model = _graph([onnx.helper.make_node("Softmax", ["m"], ["y"])], "y")
    model.opset_import[0].version = 17
    model.ir_version = 8
    path = tmp_path / "softmax.onnx"
    onnx.save(model, str(path))

    result = _run(path, tmp_path / "w", head_bits=8)

    assert result.metrics["head_nodes"] == [] and result.metrics["nodes_by_bits"] == {"4": 1}


def test_int8_keeps_the_embedding_float_and_says_so(decoder: Path, tmp_path: Path) -> None:
    result = _run(decoder, tmp_path / "w", bits=8)

    ops = [n.op_type for n in onnx.load(str(result.output_path)).graph.node]
    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert ops.count("MatMulNBits") == 3 and "Gather" in ops
    assert 8.0 < result.metrics["bits_per_weight"] < 9.5
    assert any("Embedding tables (Gather) stay float" in w for w in result.warnings)
    assert _cosine(_logits(decoder, ids), _logits(result.output_path, ids)) > 0.999


def test_hqq_quantizes_the_matmuls_and_the_table_rtn(decoder: Path, tmp_path: Path) -> None:
    result = _run(decoder, tmp_path / "w", algorithm="hqq")

    ids = np.random.default_rng(1).integers(0, VOCAB, (4, 16))
    assert result.metrics["algorithm"] == "hqq"
    assert result.metrics["nodes_quantized"] == 4  # the table rtn (integer zero points)
    assert result.metrics["nodes_by_bits"] == {"4": 4}
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
    result = _run(decoder, tmp_path / "w", exclude_nodes=["lm_head"], head_bits=8)

    assert result.metrics["float_nodes"] == ["lm_head"]
    assert result.metrics["nodes_quantized"] == 3
    assert result.metrics["head_nodes"] == []  # excluded: kept float, not at head_bits
