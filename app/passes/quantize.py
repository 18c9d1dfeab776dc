"""`quantize`: int8 quantization of ONNX models with ONNX Runtime.

The catalog side (config, checks); the pass that runs it is worker/passes/quantize.py.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from app.core.errors import SpecInvalid
from app.passes.base import ModelInfo, PassConfig, Technique

# What ONNX Runtime 1.32 quantizes: statically (its QDQ and QOperator registries) and, for
# Attention and LSTM, dynamically only.
OpType = Literal[
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "LeakyRelu",
    "Sigmoid", "Softmax", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Split",
    "Gather", "GatherElements", "Where", "Resize", "Pad", "Slice", "Transpose", "Reshape",
    "Flatten", "Squeeze", "Unsqueeze", "ArgMax", "TopK", "CumSum", "BatchNormalization",
    "InstanceNormalization", "LayerNormalization", "Attention", "LSTM",
]  # fmt: skip


ALLOWED_OP_TYPES = {
    "dynamic": frozenset({"MatMul", "Gemm", "Attention", "LSTM", "Gather", "Conv"}),
    "static": frozenset(get_args(OpType)) - {"Attention", "LSTM"},
}


DEFAULT_OP_TYPES: dict[str, tuple[str, ...]] = {
    "dynamic": ("MatMul", "Gemm", "Gather"),
    "static": (
        "Conv", "MatMul", "Gemm", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
        "GlobalAveragePool", "Concat",
    ),
}  # fmt: skip


STATIC_ONLY = ("calibration", "calibration_samples", "format")  # besides the dataset id


METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class QuantizeConfig(PassConfig):
    """Quantize weights (dynamic) or weights and activations (static) to int8."""

    op: Literal["quantize"] = Field(description="Quantization.")
    mode: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="`dynamic`: int8 weights, activations quantized on the fly at run time. "
        "`static`: int8 weights and activations, activation ranges calibrated on a dataset "
        "(the mode for convolutional networks).",
    )
    per_channel: bool = Field(
        True, description="One scale per output channel (more faithful than per-tensor)."
    )
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    op_types: list[OpType] | None = Field(
        None,
        min_length=1,
        description="ONNX op types to quantize. Default for `dynamic`: MatMul, Gemm, Gather "
        "(`Conv` is allowed but warned about: ConvInteger); for `static`: Conv, MatMul, Gemm, "
        "Add, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Concat.",
    )
    exclude_op_types: list[OpType] = Field(
        default_factory=list,
        max_length=100,
        description="ONNX op types kept in float, taken out of `op_types`.",
    )
    exclude_nodes: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Node names kept in float (partial quantization of sensitive layers).",
    )
    calibration_dataset_id: str | None = Field(
        None,
        description="`static` only, and required there: an uploaded .npz whose arrays bind to "
        "the model's inputs (first axis = samples), on which activation ranges are calibrated.",
    )
    calibration: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax",
        description="`static` only: how activation ranges are chosen from the calibration "
        "data: `minmax` (observed range), `entropy` (KL divergence), `percentile` (99.999%).",
    )
    calibration_samples: int = Field(
        128,
        ge=1,
        le=10_000,
        description="`static` only: at most this many samples of the calibration dataset are "
        "used (read 16 at a time); fewer than 32 is warned about.",
    )
    format: Literal["qdq", "qoperator"] = Field(
        "qdq",
        description="`static` only: `qdq` (QuantizeLinear/DequantizeLinear around float ops, "
        "fused by ONNX Runtime; portable) or `qoperator` (QLinearConv, QLinearMatMul ...).",
    )
    reduce_range: bool | None = Field(
        None,
        description="Quantize weights to 7 bits. Default (null): chosen from the worker's CPU: on "
        "for x86 CPUs without VNNI (AVX2), whose int8 kernels otherwise saturate and return wrong "
        "outputs; off with VNNI (AVX-512 VNNI, AVX-VNNI, AMX), where it only costs fidelity. The "
        "step's metrics say which was chosen and why. Set `true` for a model that will run on "
        "CPUs without VNNI.",
    )


def chosen_op_types(config: QuantizeConfig, *, excluded: bool = True) -> list[str]:
    """The op types a run quantizes (`excluded=False`: before `exclude_op_types` is applied)."""
    chosen = list(config.op_types or DEFAULT_OP_TYPES[config.mode])
    return [t for t in chosen if not (excluded and t in config.exclude_op_types)]


def spec_problem(config: QuantizeConfig) -> str | None:
    """What makes a config unrunnable, or None."""
    if config.mode == "static" and config.calibration_dataset_id is None:
        return (
            "`mode: static` needs `calibration_dataset_id`: an uploaded .npz whose arrays bind "
            "to the model's inputs, on which activation ranges are calibrated."
        )
    if config.mode == "dynamic":
        # Compared with the defaults, not `model_fields_set`: a stored spec has every field.
        fields = QuantizeConfig.model_fields
        given = [k for k in STATIC_ONLY if getattr(config, k) != fields[k].default]
        if config.calibration_dataset_id is not None:
            given.insert(0, "calibration_dataset_id")
        if given:
            names = ", ".join(f"`{k}`" for k in given)
            return f"Only `mode: static` takes {names}; dynamic quantization needs no calibration."
    refused = sorted(set(chosen_op_types(config, excluded=False)) - ALLOWED_OP_TYPES[config.mode])
    if refused:
        return f"`mode: {config.mode}` cannot quantize op types {refused}."
    if not chosen_op_types(config):
        return "`exclude_op_types` leaves no op type to quantize."
    return None


class QuantizeTechnique(Technique[QuantizeConfig]):
    name = "quantize"
    version = "1.1"
    config_cls = QuantizeConfig
    input_formats = ("onnx",)
    summary = (
        "int8 quantization with ONNX Runtime: dynamic (weights) or static (weights and "
        "activations, calibrated on a dataset); defaults that avoid known regressions."
    )

    def check(self, config: QuantizeConfig, model: ModelInfo, pointer: str) -> None:
        super().check(config, model, pointer)
        problem = spec_problem(config)
        if problem is not None:
            raise SpecInvalid(problem, pointer=pointer)
