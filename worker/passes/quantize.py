"""`quantize`: int8 quantization of ONNX models with ONNX Runtime.

Defaults are measured on this AVX-512 VNNI CPU (docs/field-notes.md, BENCHMARKS.md). Both modes:
per-channel int8 weights (per-tensor lost up to 0.16 cosine on a transformer), `reduce_range`
chosen from the CPU (worker/cpu.py: on without VNNI, where the kernels saturate; off with it,
where it only costs fidelity), MatMuls only where the second input is a weight. `dynamic`: only
MatMul/Gemm/Gather (embeddings: 35 -> 11 MB on an encoder, cosine change < 1e-5), since dynamic
convolutions become ConvInteger, 5-12x slower than float. `static`: QDQ with uint8 activations
(int8 activations made a 64-128 channel CNN 2x slower than float at batch 1, uint8 2.9x faster),
min-max calibration (entropy and percentile took twice as long for the same accuracy), and
besides Conv/MatMul/Gemm the ops that ONNX Runtime runs in int8 on CPU (Add, Relu, Clip, pooling,
Concat), which keep activations int8 between convolutions (0.46x -> 0.33x float at batch 32).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from app.core.errors import JobFailure
from app.passes.quantize import (
    METHODS,
    SENSITIVITY_BATCH,
    SENSITIVITY_MAX_SAMPLES,
    QuantizeConfig,
    QuantizeTechnique,
    chosen_op_types,
    sample_floor,
    spec_problem,
)
from worker import onnx_io
from worker.calibration import (
    PER_CHANNEL_MIN_OPSET,
    calibration_reader,
    preprocess,
    upgrade_opset,
)
from worker.cpu import cpu_info, int8_choice
from worker.passes.base import Pass, PassContext, PassResult
from worker.passes.quantized_nodes import GEMM_SUFFIX, node_metrics, unknown_nodes, weight_nodes
from worker.precision.nbits import quantize_nbits
from worker.sensitivity import Inputs, Quantize, Target, mixed_precision

SMALL_CALIBRATION = 32


SYNTHESIZED_SAMPLES = 8  # without a dataset: synthesized samples sensitivity is measured on
SATURATION_WARNING = (
    "`reduce_range: false` on a CPU without VNNI: ONNX Runtime's u8s8 int8 kernels saturate "
    "here, so this model's outputs may be wrong; the report's fidelity rows measure it."
)
PORTABILITY_WARNING = (
    "Quantized for a CPU with VNNI (weights use the full int8 range): on x86 CPUs without VNNI "
    "(AVX2 only) ONNX Runtime's int8 kernels saturate on such weights. For those targets, "
    "quantize with `reduce_range: true`."
)
CONV_WARNING = (
    "Dynamic quantization turns Conv into ConvInteger, which runs several times slower than "
    "float32 on CPU; convolutions want static (QDQ) quantization."
)


STATIC_HINT = (
    "{count} Conv node(s) stay float32: dynamic quantization cannot speed up convolutions. "
    "`mode: static` with a `calibration_dataset_id` quantizes them (int8 QDQ)."
)


class QuantizePass(Pass[QuantizeConfig]):
    technique = QuantizeTechnique()

    def run(self, ctx: PassContext, config: QuantizeConfig) -> PassResult:
        problem = spec_problem(config)  # check() ran in the API; a stored spec may predate it
        if problem is not None:
            raise JobFailure("spec_invalid", problem)
        if config.mode == "static":
            return _run_static(ctx, config)
        if config.mode == "weight_only":
            return _run_weight_only(ctx, config)
        return _run_dynamic(ctx, config)


def _run_weight_only(ctx: PassContext, config: QuantizeConfig) -> PassResult:
    reader = None
    if config.algorithm == "gptq":
        assert config.calibration_dataset_id is not None  # spec_problem refuses it missing
        arrays, _labels = ctx.tools.dataset_inputs(
            config.calibration_dataset_id, config.calibration_samples
        )
        reader = calibration_reader(
            arrays, ctx.inputs, config.calibration_dataset_id, ctx.input_path
        )
    out = ctx.work_dir / "quantized.onnx"
    metrics, warnings = quantize_nbits(ctx.input_path, out, config, reader)
    source = onnx_io.load_model(ctx.input_path, load_data=False)
    warnings += unknown_nodes(config, source)
    metrics |= {
        "size_bytes_before": ctx.input_path.stat().st_size,
        "size_bytes_after": out.stat().st_size,
    }
    if not metrics["nodes_quantized"]:
        warnings.append("No MatMul or Gather weight was quantized.")
    return PassResult(out, "onnx", metrics, warnings)


def _reduce_range(config: QuantizeConfig) -> tuple[bool, dict[str, Any], list[str]]:
    """`reduce_range` for this run, the metrics that say why, and the warnings it calls for."""
    choice, cpu = int8_choice(), cpu_info()
    chosen = choice.reduce_range if config.reduce_range is None else config.reduce_range
    metrics = {
        "reduce_range": chosen,
        "reduce_range_source": "cpu" if config.reduce_range is None else "spec",
        "reduce_range_reason": choice.reason,
        "int8_kernels": choice.kernels,
        "cpu_flags": list(cpu.flags),
    }
    warnings = []
    if not chosen and choice.reduce_range:
        warnings.append(SATURATION_WARNING)
    elif not chosen:
        warnings.append(PORTABILITY_WARNING)
    return chosen, metrics, warnings


def _dynamic(
    ctx: PassContext, config: QuantizeConfig, reduce_range: bool, candidates: dict[str, str]
) -> Quantize:
    """Dynamic int8 of the step's input with its settings, into `out`, of the nodes given
    (`candidates`: the quantizable nodes and their op types, read once by the caller)."""

    def renamed(names: list[str]) -> list[str]:
        # A Gemm is rewritten as `<name>_MatMul` + Add: name it both ways.
        return [*names, *(n + GEMM_SUFFIX for n in names if candidates.get(n) == "Gemm")]

    def quantize(out: Path, include: list[str] | None, exclude: list[str]) -> None:
        quantize_dynamic(
            str(ctx.input_path),
            str(out),
            op_types_to_quantize=chosen_op_types(config),
            per_channel=config.per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
            nodes_to_quantize=None if include is None else renamed(include),
            nodes_to_exclude=renamed([*config.exclude_nodes, *exclude]),
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            use_external_data_format=onnx_io.is_large(ctx.input_path),
        )

    return quantize


def _mixed(
    ctx: PassContext,
    config: QuantizeConfig,
    model: Path,
    candidates: dict[str, str],
    quantize: Quantize,
    out: Path,
) -> tuple[list[str] | None, dict[str, Any], list[dict[str, Any]] | None, list[str]]:
    """Sensitivity and `keep_float: auto` when asked: (kept float, metrics, rows, warnings);
    kept is None where the whole int8 model measured slower than float (keep it float).
    `keep_float: auto` leaves its chosen model in `out` where int8 pays."""
    if not (config.sensitivity or config.keep_float):
        return [], {}, None, []
    target = _target(ctx, config)
    nodes = {n: t for n, t in candidates.items() if n not in config.exclude_nodes}
    work = ctx.work_dir / "sensitivity"
    fixed = _fixed_batch(ctx)
    try:
        return mixed_precision(
            model,
            nodes,
            quantize,
            _sensitivity_inputs(
                ctx, config, target is not None and target.accuracy_drop is not None
            ),
            threads=ctx.threads,
            work=work,
            budget_s=config.sensitivity_budget_s,
            target=target,
            speed_batches=(fixed,) if fixed else ctx.speed_batches,
            out=out,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _target(ctx: PassContext, config: QuantizeConfig) -> Target | None:
    """What `keep_float: auto` must reach: the job's `min_cosine` (with the worst sample's
    floor) and/or its `max_accuracy_drop`; None without `keep_float: auto`."""
    if config.keep_float != "auto":
        return None
    accuracy = ctx.target_accuracy
    if ctx.target_cosine is None and accuracy is None:
        raise JobFailure(
            "spec_invalid",
            "`keep_float: auto` needs `constraints.min_cosine`, or `constraints.max_accuracy_drop` "
            "with an `evaluation`.",
        )
    floor = sample_floor(ctx.target_cosine, config.min_sample_cosine)
    return Target(
        ctx.target_cosine,
        None if floor is None or floor <= -1 else floor,
        accuracy.max_drop if accuracy is not None else None,
    )


def _fixed_batch(ctx: PassContext) -> int | None:
    first = ctx.inputs[0]["shape"] if ctx.inputs and ctx.inputs[0]["shape"] else [None]
    return first[0] if isinstance(first[0], int) else None


def _sensitivity_inputs(ctx: PassContext, config: QuantizeConfig, labelled: bool) -> Inputs:
    """Real inputs where the step has a dataset (all of it, in the job's fidelity batches: the
    result is judged on such data, and an outlier that only real data has is what breaks int8),
    else synthesized ones. A fixed-batch model gets whole batches of its own size. `labelled`
    (an accuracy target): inputs with labels, the step's dataset's where it has them, else the
    job's evaluation dataset."""
    dataset_id = config.sensitivity_dataset_id or config.calibration_dataset_id
    kind = "dataset" if config.sensitivity_dataset_id else "calibration dataset"
    limit = SENSITIVITY_MAX_SAMPLES if config.sensitivity_dataset_id else config.calibration_samples
    fixed = _fixed_batch(ctx)
    if dataset_id is None and not labelled:
        batch = fixed or SYNTHESIZED_SAMPLES
        return Inputs(ctx.tools.example_inputs(batch), batch, "synthesized")
    arrays, labels = ctx.tools.dataset_inputs(dataset_id, limit) if dataset_id else ({}, None)
    metric = ctx.target_accuracy.metric if ctx.target_accuracy is not None else "accuracy"
    if labelled and labels is None:
        assert ctx.target_accuracy is not None  # `labelled` comes from it
        dataset_id, kind = ctx.target_accuracy.dataset_id, "evaluation dataset"
        arrays, labels = ctx.tools.dataset_inputs(dataset_id, SENSITIVITY_MAX_SAMPLES)
        if labels is None:
            raise JobFailure(
                "invalid_dataset",
                f"Dataset {dataset_id}: `max_accuracy_drop` is judged on labels: it has no "
                "`labels` array.",
            )
    batch = fixed or SENSITIVITY_BATCH
    count = len(next(iter(arrays.values())))
    keep = count - count % batch if fixed else count
    if keep == 0:
        raise JobFailure(
            "dataset_too_small", f"Dataset {dataset_id}: the model needs batches of {batch}."
        )
    feeds = {k: v[:keep] for k, v in arrays.items()}
    judged = labels[:keep] if labelled and labels is not None else None
    return Inputs(feeds, batch, f"{kind} {dataset_id}", judged, metric)


def _run_dynamic(ctx: PassContext, config: QuantizeConfig) -> PassResult:
    reduce_range, range_metrics, range_warnings = _reduce_range(config)
    source = onnx_io.load_model(ctx.input_path, load_data=False)
    op_types = chosen_op_types(config)
    candidates = weight_nodes(source, set(chosen_op_types(config, excluded=False)))
    quantize = _dynamic(ctx, config, reduce_range, candidates)
    kept, mixed, rows, mixed_warnings = _mixed(
        ctx, config, ctx.input_path, candidates, quantize, _output(ctx)
    )
    out = _write(ctx, quantize, kept)
    result = onnx_io.load_model(out, load_data=False)
    metrics = {**node_metrics(config, source, result, candidates), **range_metrics, **mixed}
    warnings = [*range_warnings, *mixed_warnings, *unknown_nodes(config, source)]
    if "Conv" in op_types and "Conv" in candidates.values():
        warnings.append(CONV_WARNING)
    convs = set(weight_nodes(result, {"Conv"}))
    if convs:
        warnings.append(STATIC_HINT.format(count=len(convs)))
    if not metrics["nodes_quantized"] and kept is not None:
        warnings.append(
            "No node was quantized: the model has no weight-bearing node of the chosen types."
        )
    return PassResult(out, "onnx", metrics, warnings, rows)


def _write(ctx: PassContext, quantize: Quantize, kept: list[str] | None) -> Path:
    """The step's output: quantized with `kept` float (`keep_float: auto` already wrote and
    timed it there), or, where it measured the whole int8 model slower than float (kept None),
    the step's input unchanged."""
    if kept is None:
        return ctx.input_path
    out = _output(ctx)
    if not out.exists():
        quantize(out, None, kept)
    return out


def _output(ctx: PassContext) -> Path:
    return ctx.work_dir / "quantized.onnx"


def _run_static(ctx: PassContext, config: QuantizeConfig) -> PassResult:
    assert config.calibration_dataset_id is not None  # spec_problem refuses it missing
    reduce_range, range_metrics, range_warnings = _reduce_range(config)
    arrays, _labels = ctx.tools.dataset_inputs(
        config.calibration_dataset_id, config.calibration_samples
    )
    reader = calibration_reader(arrays, ctx.inputs, config.calibration_dataset_id, ctx.input_path)
    minimum = PER_CHANNEL_MIN_OPSET if config.per_channel else 0
    upgraded, opset_metrics = upgrade_opset(ctx.input_path, ctx.work_dir, minimum)
    model_path, warnings = preprocess(upgraded, ctx.work_dir)
    source = onnx_io.load_model(model_path, load_data=False)
    candidates = weight_nodes(source, set(chosen_op_types(config, excluded=False)))

    def quantize(path: Path, include: list[str] | None, exclude: list[str]) -> None:
        reader.rewind()
        _quantize_static(model_path, path, reader, config, reduce_range, include, exclude)

    kept, mixed, rows, mixed_warnings = _mixed(
        ctx, config, model_path, candidates, quantize, _output(ctx)
    )
    out = _write(ctx, quantize, kept)
    for scratch in {model_path, upgraded} - {ctx.input_path}:
        scratch.unlink()  # the step's output is the one quantized file
    # Kept float: nodes are counted in the model they were chosen from (preprocessing may have
    # turned the input's Constant weights into initializers, which the count reads).
    result = source if kept is None else onnx_io.load_model(out, load_data=False)
    metrics = node_metrics(config, source, result, candidates)
    metrics.update(
        calibration=config.calibration,
        calibration_samples=reader.samples,
        calibration_batch_size=reader.batch,
        format=config.format,
        op_types=chosen_op_types(config),
        activation_type="uint8",
        weight_type=config.weight_type,
        preprocessed=model_path != upgraded,
        **range_metrics,
        **opset_metrics,
        **mixed,
    )
    warnings += [*range_warnings, *mixed_warnings, *unknown_nodes(config, source)]
    if reader.samples < SMALL_CALIBRATION:
        warnings.append(
            f"Calibrated on {reader.samples} samples: activation ranges from fewer than "
            f"{SMALL_CALIBRATION} are unreliable (the default uses up to 128)."
        )
    if not metrics["nodes_quantized"] and kept is not None:
        warnings.append("No weight-bearing node of the chosen op types was quantized.")
    return PassResult(out, "onnx", metrics, warnings, rows)


def _quantize_static(
    model: Path,
    out: Path,
    reader: Any,
    config: QuantizeConfig,
    reduce_range: bool,
    include: list[str] | None = None,
    exclude: tuple[str, ...] | list[str] = (),
) -> None:
    quantize_static(
        str(model),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
        op_types_to_quantize=chosen_op_types(config),
        per_channel=config.per_channel,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
        nodes_to_quantize=include,
        nodes_to_exclude=[*config.exclude_nodes, *exclude],
        calibrate_method=CalibrationMethod[METHODS[config.calibration]],
        use_external_data_format=onnx_io.is_large(model),
        extra_options={
            "MatMulConstBOnly": True,
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            # Histograms from one reader batch at a time: 280 MB instead of 1.5 GB for 128
            # samples of a 3x64x64 CNN. Min-max reduces in the graph, bounded without it.
            **({} if config.calibration == "minmax" else {"CalibStridedMinMax": 1}),
        },
    )
