"""Which nodes a quantization can touch and which it did: read from the graphs before and after,
for the `quantize` step's metrics (worker/passes/quantize.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from onnx import TensorProto

from app.passes.quantize import QuantizeConfig

GEMM_SUFFIX = "_MatMul"  # ONNX Runtime's name for a Gemm it rewrites as MatMul + Add


WEIGHT_INPUT = {"Gather": 0}  # which input holds the weight; 1 for the others


def weight_nodes(model: Any, op_types: set[str]) -> dict[str, str]:
    """Nodes of the chosen types whose weight is a float initializer: what can be quantized
    (shape arithmetic such as Shape -> Gather is not a candidate, nor reported as kept float)."""
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    weights = {t.name for t in model.graph.initializer if t.data_type in floats}
    out = {}
    for node in model.graph.node:
        index = WEIGHT_INPUT.get(node.op_type, 1)
        if node.op_type in op_types and len(node.input) > index and node.input[index] in weights:
            out[node.name] = node.op_type
    return out


def histogram(model: Any) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


def unknown_nodes(config: QuantizeConfig, model: Any) -> list[str]:
    names = {node.name for node in model.graph.node}
    unknown = sorted(set(config.exclude_nodes) - names)
    return [f"exclude_nodes names no node of the model: {unknown[:20]}."] if unknown else []


def node_metrics(
    config: QuantizeConfig, source: Any, result: Any, candidates: dict[str, str]
) -> dict[str, Any]:
    # A node stayed float if it still reads a float weight (a quantized Gather keeps its name but
    # reads a dequantized int8 table; a quantized Conv reads a DequantizeLinear output in QDQ, or
    # became a QLinearConv in QOperator). The dynamic quantizer rewrites a Gemm as
    # `<name>_MatMul` + `<name>_Add`, reading a transposed copy of the weight.
    found = weight_nodes(result, set(candidates.values()) | {"MatMul"})
    renamed = {n: n.removesuffix(GEMM_SUFFIX) for n in found if n not in candidates}
    still_float = {renamed.get(n, n) for n in found} & set(candidates)
    quantized = sorted(set(candidates) - still_float)
    by_type = {n for n, t in candidates.items() if t in config.exclude_op_types}
    return {
        "nodes_quantized": len(quantized),
        "nodes_kept_float": len(still_float),
        "quantized_nodes": quantized[:500],
        "float_nodes": sorted(still_float)[:500],
        "excluded_nodes": sorted((set(config.exclude_nodes) & set(candidates)) | by_type)[:500],
        "op_types_before": histogram(source),
        "op_types_after": histogram(result),
    }
