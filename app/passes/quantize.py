"""`quantize`: int8 quantization of ONNX models with ONNX Runtime.

Defaults come from measurement (FIELD-NOTES.md): per-channel int8 weights (per-tensor lost up to
0.16 cosine on a transformer), `reduce_range` off (much worse on VNNI CPUs), only MatMul/Gemm by
default, since dynamic quantization of convolutions makes ConvInteger, which ran 7-14x slower than
float on CPU, and only MatMuls whose second input is a weight (activation x activation MatMuls,
e.g. attention scores, stay float). Embedding tables (Gather over a weight) are quantized too: on
a 45 MB encoder that took the int8 model from 35 MB to 11 MB for a cosine change below 1e-5
(BENCHMARKS.md).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field

from app.passes.base import ModelInfo, Pass, PassConfig, PassContext, PassResult

DynamicOpType = Literal["MatMul", "Gemm", "Attention", "LSTM", "Gather", "Conv"]
CONV_WARNING = (
    "Dynamic quantization turns Conv into ConvInteger, which runs several times slower than "
    "float32 on CPU; convolutions want static (QDQ) quantization."
)


class QuantizeConfig(PassConfig):
    """Quantize weights to int8."""

    op: Literal["quantize"] = Field(description="Quantization.")
    mode: Literal["dynamic"] = Field(
        "dynamic",
        description="`dynamic`: int8 weights, activations quantized on the fly at run time.",
    )
    per_channel: bool = Field(
        True, description="One scale per output channel (more faithful than per-tensor)."
    )
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    op_types: list[DynamicOpType] = Field(
        default_factory=lambda: list[DynamicOpType](["MatMul", "Gemm", "Gather"]),
        min_length=1,
        description="ONNX op types to quantize. `Conv` is allowed but warned about (ConvInteger).",
    )
    exclude_nodes: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Node names kept in float (partial quantization of sensitive layers).",
    )


WEIGHT_INPUT = {"Gather": 0}  # which input holds the weight; 1 for the others


def _weight_nodes(model: Any, op_types: set[str]) -> dict[str, str]:
    """Nodes of the chosen types whose weight is a float initializer: what can be quantized
    (shape arithmetic such as Shape -> Gather is not a candidate, nor reported as kept float)."""
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    weights = {t.name for t in model.graph.initializer if t.data_type in floats}
    out = {}
    for node in model.graph.node:
        index = WEIGHT_INPUT.get(node.op_type, 1)
        if node.op_type in op_types and len(node.input) > index and node.input[index] in weights:
            out[node.name] = node.op_type
    return out


def _histogram(model: Any) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


class QuantizePass(Pass[QuantizeConfig]):
    name = "quantize"
    version = "1.0"
    config_cls = QuantizeConfig
    input_formats = ("onnx",)
    summary = (
        "int8 quantization (dynamic) with ONNX Runtime; defaults that avoid known regressions."
    )

    def check(self, config: QuantizeConfig, model: ModelInfo, pointer: str) -> None:
        super().check(config, model, pointer)

    def run(self, ctx: PassContext, config: QuantizeConfig) -> PassResult:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = onnx.load(str(ctx.input_path), load_external_data=False)
        candidates = _weight_nodes(source, set(config.op_types))
        out = ctx.work_dir / "quantized.onnx"
        quantize_dynamic(
            str(ctx.input_path),
            str(out),
            op_types_to_quantize=list(config.op_types),
            per_channel=config.per_channel,
            reduce_range=False,
            weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
            nodes_to_exclude=list(config.exclude_nodes),
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        result = onnx.load(str(out), load_external_data=False)
        # A node stayed float if it still reads its original float weight (a quantized Gather
        # keeps its name but reads a dequantized int8 table instead).
        still_float = set(_weight_nodes(result, set(config.op_types))) & set(candidates)
        quantized = sorted(set(candidates) - still_float)
        warnings = (
            [CONV_WARNING] if "Conv" in config.op_types and "Conv" in candidates.values() else []
        )
        if not quantized:
            warnings.append(
                "No node was quantized: the model has no weight-bearing node of the chosen types."
            )
        metrics = {
            "nodes_quantized": len(quantized),
            "nodes_kept_float": len(still_float),
            "quantized_nodes": quantized[:500],
            "float_nodes": sorted(still_float)[:500],
            "excluded_nodes": sorted(set(config.exclude_nodes) & set(candidates)),
            "op_types_before": _histogram(source),
            "op_types_after": _histogram(result),
        }
        return PassResult(out, "onnx", metrics, warnings)
