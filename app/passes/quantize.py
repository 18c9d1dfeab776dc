"""`quantize`: int8 quantization of ONNX models with ONNX Runtime.

The catalog side (config, checks); the pass that runs it is worker/passes/quantize.py.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from app.core.errors import SpecInvalid
from app.passes.base import MAX_NODES, ModelInfo, NodeName, PassConfig, SpecId, Technique

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
    "weight_only": frozenset({"MatMul", "Gather"}),  # ONNX Runtime's MatMulNBits quantizer
}


DEFAULT_OP_TYPES: dict[str, tuple[str, ...]] = {
    "dynamic": ("MatMul", "Gemm", "Gather"),
    "static": (
        "Conv", "MatMul", "Gemm", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
        "GlobalAveragePool", "Concat",
    ),
    "weight_only": ("MatMul", "Gather"),
}  # fmt: skip


STATIC_ONLY = ("calibration", "calibration_samples", "format")  # besides the dataset id
WEIGHT_ONLY = ("bits", "block_size", "algorithm", "symmetric", "accuracy_level", "head_bits")


SENSITIVITY_BATCH = 64  # samples per run: worker/measure/pair.py's EVAL_BATCH, the job's fidelity
SENSITIVITY_MAX_SAMPLES = 10_000  # its MAX_EVAL_SAMPLES
SAMPLE_FLOOR_FACTOR = 4.0  # the worst sample may lose this many times what the mean may


def sample_floor(min_cosine: float | None, given: float | None = None) -> float | None:
    """The worst-sample cosine that `keep_float: auto` and `recipe: auto` require beside
    `min_cosine` (which bounds the mean): `given` where set, else derived from `min_cosine`
    (`SAMPLE_FLOOR_FACTOR` times its allowed loss); None without `min_cosine`."""
    if given is not None:
        return given
    if min_cosine is None:
        return None
    return max(-1.0, 1.0 - SAMPLE_FLOOR_FACTOR * (1.0 - min_cosine))


METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class QuantizeConfig(PassConfig):
    """Quantize weights (dynamic, weight_only) or weights and activations (static)."""

    op: Literal["quantize"] = Field(description="Quantization.")
    mode: Literal["dynamic", "static", "weight_only"] = Field(
        "dynamic",
        description="`dynamic`: int8 weights, activations quantized on the fly at run time. "
        "`static`: int8 weights and activations, activation ranges calibrated on a dataset "
        "(the mode for convolutional networks). `weight_only`: 4- or 8-bit block-quantized "
        "MatMul weights (and 4-bit embedding tables), float activations, through ONNX Runtime's "
        "MatMulNBits (for transformers and LLMs; the result runs in ONNX Runtime only).",
    )
    per_channel: bool = Field(
        True, description="One scale per output channel (more faithful than per-tensor)."
    )
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    op_types: list[OpType] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="ONNX op types to quantize. Default for `dynamic`: MatMul, Gemm, Gather "
        "(`Conv` is allowed but warned about: ConvInteger); for `static`: Conv, MatMul, Gemm, "
        "Add, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Concat.",
    )
    exclude_op_types: list[OpType] = Field(
        default_factory=list,
        max_length=100,
        description="ONNX op types kept in float, taken out of `op_types`.",
    )
    exclude_nodes: list[NodeName] = Field(
        default_factory=list,
        max_length=MAX_NODES,
        description="Node names kept in float (partial quantization of sensitive layers).",
    )
    calibration_dataset_id: SpecId | None = Field(
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
    bits: Literal[4, 8] = Field(4, description="`weight_only` only: bits per weight.")
    head_bits: Literal[4, 8] | None = Field(
        None,
        description="`weight_only` only: bits of the logits head, the MatMul whose output is a "
        "graph output (directly or through a bias Add and reshapes), quantized round to nearest "
        "whatever `algorithm` is; `8` keeps it wider, as llama.cpp's k-quants and ONNX Runtime "
        "GenAI's `k_quant_mixed` do (its argmax is the next token). Default: `bits`. No effect "
        "on a model without such a MatMul. It costs speed: on SmolLM2-135M, `hqq` with an 8-bit "
        "head ran 3.78x slower than fp32 at batch 1 on an AVX2 CPU, the 4-bit default 1.26x "
        "(BENCHMARKS.md). At least `bits`.",
    )
    block_size: int = Field(
        32,
        ge=16,
        le=256,
        description="`weight_only` only: weights per scale (a power of two, 16 to 256).",
    )
    algorithm: Literal["rtn", "hqq", "gptq"] = Field(
        "rtn",
        description="`weight_only` only: `rtn` (round to nearest, blockwise, integer zero "
        "points), `hqq` (half-quadratic optimization of scales and float zero points: about one "
        "more bit per weight and closer to float, but MatMulNBits with float zero points runs "
        "several times slower on CPU; the embedding table is quantized `rtn`), `gptq` "
        "(error-compensating, calibrated on `calibration_dataset_id`, MatMul only).",
    )
    symmetric: bool = Field(
        False, description="`weight_only` only: symmetric blocks (no zero point)."
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None,
        description="`weight_only` only: the precision MatMulNBits computes in (ONNX Runtime: 0 "
        "unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations); default: ONNX Runtime's.",
    )
    sensitivity: bool = Field(
        False,
        description="Measure each quantizable node's sensitivity on the step's sensitivity "
        "inputs (`sensitivity_dataset_id`, else the calibration data, else inputs synthesized "
        "from the signature): the drop in the worst "
        "output's `cosine_mean` when that node alone is quantized, and its share of the float "
        "model's time. Reported as the step's `sensitivity`, most sensitive first. Costs one "
        "quantization and one run per node, bounded by `sensitivity_budget_s`.",
    )
    keep_float: Literal["auto"] | None = Field(
        None,
        description="`auto`: keep in float the fewest nodes, those that buy the most fidelity "
        "per time kept float, such that on the step's sensitivity inputs the quantized model "
        "meets the job's fidelity target: its worst `cosine_mean` at least "
        "`constraints.min_cosine` and its worst sample at least `min_sample_cosine`, and/or its "
        "drop in the `evaluation` metric at most `constraints.max_accuracy_drop`, judged on "
        "labels (those of `sensitivity_dataset_id` or the calibration data where they have a "
        "`labels` array, else the evaluation dataset's). The job needs one of the two targets. "
        "Op types whose int8 form measured slower than float also stay float; and where the "
        "whole chosen model measured slower than float at any of the job's benchmark batch "
        "sizes (`keep_float.whole_model_timing`), the step keeps the model float, "
        "unquantized, and says so with the timings. Implies `sensitivity`. `dynamic` and "
        "`static` modes.",
    )
    sensitivity_dataset_id: SpecId | None = Field(
        None,
        description="`dynamic` and `static`, with `sensitivity` or `keep_float`: an uploaded .npz "
        "(arrays bound to the model's inputs) on which the nodes are judged: all its samples (up "
        f"to {SENSITIVITY_MAX_SAMPLES}), run {SENSITIVITY_BATCH} at a time as the job's "
        "fidelity is (dynamic int8's activation scales depend on the batch). Give the data the "
        "result will be judged on, e.g. the job's evaluation dataset (`recipe: auto` does): a "
        "layer fragile only on real inputs is found only on them. Default: the calibration "
        "dataset (`static`), else inputs synthesized from the model's signature.",
    )
    min_sample_cosine: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="`keep_float: auto`: besides every output's `cosine_mean` >= "
        "`constraints.min_cosine`, its worst sample's cosine (`cosine_min`) on the sensitivity "
        "inputs must reach this (a mean hides a few broken samples: under int8 the shortest "
        "sentences of a text encoder). Default (null): "
        f"1 - {SAMPLE_FLOOR_FACTOR:g} x (1 - min_cosine), e.g. 0.98 for 0.995; -1 judges the "
        "mean only.",
    )
    sensitivity_budget_s: float = Field(
        300, gt=0, le=3600, description="Time for the per-node measurements; the rest unmeasured."
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


def _given(config: QuantizeConfig, keys: tuple[str, ...]) -> list[str]:
    # Compared with the defaults, not `model_fields_set`: a stored spec has every field.
    fields = QuantizeConfig.model_fields
    return [k for k in keys if getattr(config, k) != fields[k].default]


def _needs_calibration(config: QuantizeConfig) -> bool:
    return config.mode == "static" or (config.mode == "weight_only" and config.algorithm == "gptq")


def _mode_problem(config: QuantizeConfig) -> str | None:
    """A field given to a mode that does not take it, or a dataset a mode needs and lacks."""
    if _needs_calibration(config) and config.calibration_dataset_id is None:
        what = "`mode: static`" if config.mode == "static" else "`algorithm: gptq`"
        return (
            f"{what} needs `calibration_dataset_id`: an uploaded .npz whose arrays bind to the "
            "model's inputs, on which it is calibrated."
        )
    static_given = _given(config, STATIC_ONLY) if config.mode != "static" else []
    if config.calibration_dataset_id is not None and not _needs_calibration(config):
        static_given.insert(0, "calibration_dataset_id")
    if static_given:
        listed = ", ".join(f"`{k}`" for k in static_given)
        return (
            f"Only `mode: static` takes {listed}; {config.mode} quantization needs no calibration."
        )
    weight_given = _given(config, WEIGHT_ONLY) if config.mode != "weight_only" else []
    if weight_given:
        listed = ", ".join(f"`{k}`" for k in weight_given)
        return f"Only `mode: weight_only` takes {listed}."
    if config.mode == "weight_only" and (config.sensitivity or config.keep_float):
        return "`sensitivity` and `keep_float` apply to `dynamic` and `static` modes."
    if config.sensitivity_dataset_id is not None and not (config.sensitivity or config.keep_float):
        return "`sensitivity_dataset_id` needs `sensitivity: true` or `keep_float: auto`."
    if config.mode == "weight_only" and (config.head_bits or config.bits) < config.bits:
        return f"`head_bits` ({config.head_bits}) must be at least `bits` ({config.bits})."
    if config.block_size & (config.block_size - 1):
        return f"`block_size` must be a power of two; got {config.block_size}."
    return None


def spec_problem(config: QuantizeConfig) -> str | None:
    """What makes a config unrunnable, or None."""
    problem = _mode_problem(config)
    if problem is not None:
        return problem
    refused = sorted(set(chosen_op_types(config, excluded=False)) - ALLOWED_OP_TYPES[config.mode])
    if refused:
        return f"`mode: {config.mode}` cannot quantize op types {refused}."
    if not chosen_op_types(config):
        return "`exclude_op_types` leaves no op type to quantize."
    return None


class QuantizeTechnique(Technique[QuantizeConfig]):
    name = "quantize"
    version = "1.3"
    config_cls = QuantizeConfig
    input_formats = ("onnx",)
    summary = (
        "Quantization with ONNX Runtime: int8 dynamic (weights) or static (weights and "
        "activations, calibrated on a dataset), or 4/8-bit weight-only (MatMulNBits); defaults "
        "that avoid known regressions and follow the worker's CPU."
    )

    def check(self, config: QuantizeConfig, model: ModelInfo, pointer: str) -> None:
        super().check(config, model, pointer)
        problem = spec_problem(config)
        if problem is not None:
            raise SpecInvalid(problem, pointer=pointer)
