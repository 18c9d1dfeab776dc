"""`quantize` on a real `transformers` decoder graph (tests/llama.py: a 2-layer Llama exported
once per session): 4-bit weight-only (MatMulNBits) shrinks every MatMul weight and the embedding
and keeps the next token; the default dynamic int8 keeps it on both CPU kinds' paths (the flags
injected, as in test_quantize_cpu.py). A hand-built decoder (test_quantize_weight_only.py) lacks
the rotary, RMSNorm, GQA and mask arithmetic of an exported LLM; this graph has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from llama import export_llama, next_tokens, prompts, tiny_llama, torch_logits
from onnx import numpy_helper

from app.passes.quantize import QuantizeConfig
from worker import cpu
from worker.passes.base import PassResult
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context

AVX2 = "avx2,fma,f16c"
VNNI = "avx2,fma,f16c,avx512f,avx512_vnni"


@pytest.fixture(scope="session")
def llama_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny Llama's ONNX file, its feeds and PyTorch's logits on them (built once)."""
    lm = tiny_llama()
    path = export_llama(lm, tmp_path_factory.mktemp("llama") / "llama.onnx")
    feeds = prompts(batch=32)
    return {"path": path, "feeds": feeds, "torch": torch_logits(lm, feeds)}


def _run(model: Path, work: Path, datasets: dict[str, Path] | None = None, **fields: Any) -> Any:
    work.mkdir(parents=True)
    ctx = onnx_context(model, work, datasets=datasets)
    result: PassResult = QuantizePass().run(ctx, QuantizeConfig(op="quantize", **fields))
    return result


def _logits(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def _fidelity(reference: np.ndarray, got: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(worst row's cosine over its real positions, next-token agreement at the last one)."""
    worst = 1.0
    for row, length in enumerate(mask.sum(1)):
        a, b = reference[row, :length].ravel(), got[row, :length].ravel()
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    agree = float((next_tokens(reference, mask) == next_tokens(got, mask)).mean())
    return worst, agree


def _matmul_weight_bytes(path: Path) -> int:
    """Bytes of the float initializers that MatMul and Gather nodes read as weights."""
    model = onnx.load(str(path))
    floats = {
        t.name: numpy_helper.to_array(t).nbytes
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
    }
    used = {n.input[1 if n.op_type == "MatMul" else 0] for n in model.graph.node
            if n.op_type in ("MatMul", "Gather") and len(n.input) > 1}  # fmt: skip
    return sum(size for name, size in floats.items() if name in used)


def test_the_export_is_a_real_llama_graph(llama_onnx: dict[str, Any]) -> None:
    """The fixture is what the other tests claim: PyTorch's logits, a tied LM head duplicated
    as a MatMul weight, padding masked (right padding leaves real positions unchanged)."""
    feeds, path = llama_onnx["feeds"], llama_onnx["path"]
    got = _logits(path, feeds)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}

    assert np.abs(got - llama_onnx["torch"]).max() < 1e-4
    assert {"MatMul", "Gather", "Softmax", "Sin", "Cos", "ReduceMean"} <= ops
    assert _matmul_weight_bytes(path) > 0.8 * path.stat().st_size
    unpadded = {k: v[:1, : feeds["attention_mask"][0].sum()] for k, v in feeds.items()}
    assert np.allclose(_logits(path, unpadded)[0], got[0, : unpadded["input_ids"].shape[1]],
                       atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("algorithm", ["rtn", "hqq"])
def test_int4_weight_only_shrinks_the_weights_and_keeps_the_next_token(
    llama_onnx: dict[str, Any], tmp_path: Path, algorithm: str
) -> None:
    path, feeds = llama_onnx["path"], llama_onnx["feeds"]
    result = _run(path, tmp_path / "w", mode="weight_only", bits=4, algorithm=algorithm)

    after = onnx.load(str(result.output_path))
    ops = [n.op_type for n in after.graph.node]
    worst, agree = _fidelity(_logits(path, feeds), _logits(result.output_path, feeds),
                             feeds["attention_mask"])  # fmt: skip
    # 2 layers x 7 projections + the LM head, and the embedding table (with hqq: rtn).
    assert ops.count("MatMulNBits") == 15
    assert ops.count("GatherBlockQuantized") == 1
    # A 4-bit table is an int4 tensor (opset 21): the opset-17 export was converted, not just
    # relabelled (relabelled, ReduceMean keeps its opset-17 `axes` and ONNX Runtime refuses it).
    opset = next(o.version for o in after.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == 21
    assert _matmul_weight_bytes(result.output_path) == 0
    # The quantized weights: 4 bits plus, per block of 32, a float32 scale and a zero point
    # (4-bit; hqq's is float): at most a fifth of their fp32 bytes.
    assert result.metrics["bits_per_weight"] / 32 <= (0.17 if algorithm == "rtn" else 0.19)
    # The file: what is left float (norms, rotary tables, the graph's constants) is a third of
    # this tiny model's fp32 file, so the file shrinks less than its weights.
    assert result.metrics["size_bytes_after"] <= 0.4 * result.metrics["size_bytes_before"]
    assert worst > 0.98
    assert agree >= 0.9


@pytest.mark.parametrize("algorithm", ["rtn", "hqq"])
def test_int4_weight_only_with_head_bits_8_keeps_the_lm_head_at_8_bits(
    llama_onnx: dict[str, Any], tmp_path: Path, algorithm: str
) -> None:
    """The exported graph's LM head (the MatMul whose output is `logits`) is found and quantized
    at 8 bits, round to nearest whatever the algorithm; the 14 projections stay at 4."""
    path, feeds = llama_onnx["path"], llama_onnx["feeds"]
    result = _run(path, tmp_path / "w", mode="weight_only", bits=4, algorithm=algorithm,
                  head_bits=8)  # fmt: skip

    after = onnx.load(str(result.output_path))
    head = [n for n in after.graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits"]
    bits = next(a.i for a in head[0].attribute if a.name == "bits")
    worst, agree = _fidelity(_logits(path, feeds), _logits(result.output_path, feeds),
                             feeds["attention_mask"])  # fmt: skip
    assert bits == 8 and result.metrics["head_bits"] == 8
    assert result.metrics["head_nodes"] == [head[0].name.removesuffix("_Q8")]
    assert result.metrics["nodes_by_bits"] == {"4": 15, "8": 1}  # the table: 4 bits
    # This tiny model's head is a quarter of its weights (SmolLM2-135M's: a sixth, 5% of its
    # bytes at 8 bits), so its bits per weight rise more than an LLM's.
    assert result.metrics["bits_per_weight"] / 32 <= (0.2 if algorithm == "rtn" else 0.23)
    assert worst > 0.98
    assert agree >= 0.9


def test_int4_gptq_calibrates_on_token_batches(llama_onnx: dict[str, Any], tmp_path: Path) -> None:
    path, feeds = llama_onnx["path"], llama_onnx["feeds"]
    data = tmp_path / "cal.npz"
    np.savez(data, **prompts(batch=16, seed=5))

    result = _run(path, tmp_path / "w", {"cal": data}, mode="weight_only", bits=4,
                  algorithm="gptq", calibration_dataset_id="cal")  # fmt: skip

    worst, agree = _fidelity(_logits(path, feeds), _logits(result.output_path, feeds),
                             feeds["attention_mask"])  # fmt: skip
    assert result.metrics["nodes_quantized"] == 15
    assert worst > 0.98
    assert agree >= 0.9


@pytest.mark.parametrize("flags", [AVX2, VNNI], ids=["avx2", "vnni"])
def test_default_int8_keeps_the_next_token_on_each_cpu_path(
    llama_onnx: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str
) -> None:
    """The default `quantize` (dynamic int8, per-channel, reduce_range from the CPU). On this
    machine the AVX2 path's 7-bit weights compute what an AVX2 CPU computes with them."""
    monkeypatch.setenv(cpu.FLAGS_ENV, flags)
    path, feeds = llama_onnx["path"], llama_onnx["feeds"]
    result = _run(path, tmp_path / "w")

    worst, agree = _fidelity(_logits(path, feeds), _logits(result.output_path, feeds),
                             feeds["attention_mask"])  # fmt: skip
    assert result.metrics["reduce_range"] is (flags == AVX2)
    assert result.metrics["nodes_quantized"] >= 15
    # int8 plus per-channel scales and the graph: under half of this tiny model's fp32 file.
    assert result.output_path.stat().st_size < 0.5 * path.stat().st_size
    assert worst > 0.98
    assert agree >= 0.9
