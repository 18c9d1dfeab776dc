"""4- and 8-bit weight-only quantization through ONNX Runtime's MatMulNBits quantizer: MatMul
weights become MatMulNBits (block-quantized, float activations) and, at 4 bits with `rtn`, embedding
tables become GatherBlockQuantized. Both are ONNX Runtime contrib ops.

`rtn` is ONNX Runtime's default blockwise quantizer (round to nearest, in C++); `hqq` and `gptq`
are its HQQ and GPTQ configurations. HQQ writes float zero points, which GatherBlockQuantized
cannot take, and the GPTQ and 8-bit paths quantize MatMul only: embeddings then stay float.

A 4-bit embedding table is an int4 tensor, which needs opset 21: ONNX Runtime's quantizer then
only rewrites the opset number, which leaves ops whose form changed since the model's opset
invalid (an LLM exported at opset 17 fails to load: ReduceMean's `axes` became an input in 18).
So the model is converted to opset 21 first (onnx's version converter); where that fails, the
embedding stays float and the step says so.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper, version_converter
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

from app.core.errors import JobFailure
from app.passes.quantize import QuantizeConfig, chosen_op_types
from worker import onnx_io

QUANTIZED_OPS = ("MatMulNBits", "GatherBlockQuantized")
QUANT_AXES = (("MatMul", 0), ("Gather", 1))
INT4_OPSET = 21  # the first opset with int4/uint4 tensors (GatherBlockQuantized's packed table)
CONTRIB_WARNING = (
    "Weight-only quantization writes ONNX Runtime contrib ops (MatMulNBits, "
    "GatherBlockQuantized): the model runs in ONNX Runtime only."
)


def op_types(config: QuantizeConfig) -> tuple[list[str], list[str]]:
    """The op types this algorithm and width can quantize, and warnings for those it cannot."""
    chosen = chosen_op_types(config)
    if "Gather" in chosen and (config.bits != 4 or config.algorithm != "rtn"):
        why = "8 bits" if config.bits != 4 else f"`algorithm: {config.algorithm}`"
        chosen.remove("Gather")
        return chosen, [f"Embedding tables (Gather) stay float: with {why} ONNX Runtime "
                        "quantizes MatMul weights only."]  # fmt: skip
    return chosen, []


def _algo_config(
    config: QuantizeConfig, ops: tuple[str, ...], reader: CalibrationDataReader | None
) -> Any:
    if config.algorithm == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(
            block_size=config.block_size, bits=config.bits, op_types_to_quantize=ops
        )
    if config.algorithm == "gptq":
        return nbits.GPTQWeightOnlyQuantConfig(
            calibration_data_reader=reader, block_size=config.block_size, op_types_to_quantize=ops
        )
    return nbits.DefaultWeightOnlyQuantConfig(
        block_size=config.block_size,
        is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level,
        op_types_to_quantize=ops,
        quant_axes=QUANT_AXES,
        bits=config.bits,
    )


def quantize_nbits(
    source: Path, out: Path, config: QuantizeConfig, reader: CalibrationDataReader | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Write the weight-only quantized model to `out`; its metrics and warnings.

    Raises:
        JobFailure: ONNX Runtime's quantizer refused the model.
    """
    ops, warnings = op_types(config)
    model = onnx_io.load_model(source)  # the quantizer reads the weights: external data too
    model, ops, opset_metrics, opset_warnings = _int4_opset(model, ops)
    warnings += opset_warnings
    before = float_weights(model, set(ops))
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        bits=config.bits,
        block_size=config.block_size,
        is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level,
        nodes_to_exclude=list(config.exclude_nodes),
        op_types_to_quantize=tuple(ops),
        quant_axes=QUANT_AXES,
        algo_config=_algo_config(config, tuple(ops), reader),
    )
    try:
        quantizer.process()
    except Exception as exc:  # its errors are asserts and ValueErrors on graph forms it lacks
        raise JobFailure(
            "quantization_failed", f"Weight-only quantization failed: {type(exc).__name__}: {exc}"
        ) from exc
    quantizer.model.save_model_to_file(str(out), use_external_data_format=onnx_io.is_large(source))
    metrics = _metrics(config, before, onnx.load(str(out))) | opset_metrics
    return metrics, [*warnings, CONTRIB_WARNING]


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _int4_opset(model: Any, ops: list[str]) -> tuple[Any, list[str], dict[str, Any], list[str]]:
    """The model at INT4_OPSET where a 4-bit embedding needs it (see the module's docstring):
    (model, op types, metrics, warnings). Without a conversion the embedding stays float."""
    before = _opset(model)
    if "Gather" not in ops or before >= INT4_OPSET:
        return model, ops, {}, []
    try:
        converted = version_converter.convert_version(model, INT4_OPSET)
    except Exception as exc:  # the converter lacks adapters for some ops and forms
        kept = [t for t in ops if t != "Gather"]
        warning = (
            f"Embedding tables (Gather) stay float: a 4-bit table needs opset {INT4_OPSET} and "
            f"converting this opset-{before} model failed ({type(exc).__name__}: "
            f"{str(exc)[:200]})."
        )
        return model, kept, {"opset_before": before, "opset_after": before}, [warning]
    return converted, ops, {"opset_before": before, "opset_after": INT4_OPSET}, []


def float_weights(model: Any, ops: set[str]) -> dict[str, int]:
    """Nodes of `ops` whose weight is a float initializer: name -> element count (from the dims)."""
    sizes = {
        t.name: math.prod(t.dims)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
    }
    found = {}
    for node in model.graph.node:
        weight = node.input[0 if node.op_type == "Gather" else 1] if len(node.input) > 1 else ""
        if node.op_type in ops and weight in sizes:
            found[node.name] = int(sizes[weight])
    return found


def _metrics(config: QuantizeConfig, before: dict[str, int], result: Any) -> dict[str, Any]:
    quantized = [n for n in result.graph.node if n.op_type in QUANTIZED_OPS]
    inputs = {name for n in quantized for name in n.input}  # packed weights, scales, zeros
    stored = sum(
        len(t.raw_data) or numpy_helper.to_array(t).nbytes
        for t in result.graph.initializer
        if t.name in inputs
    )
    left = set(float_weights(result, {"MatMul", "Gather"}))
    kept = sorted(set(before) & left)
    elements = sum(v for k, v in before.items() if k not in left)
    return {
        "mode": "weight_only",
        "bits": config.bits,
        "block_size": config.block_size,
        "algorithm": config.algorithm,
        "symmetric": config.symmetric,
        "accuracy_level": config.accuracy_level,
        "nodes_quantized": len(quantized),
        "nodes_kept_float": len(kept),
        "float_nodes": kept[:500],
        "weights_quantized": elements,
        # Measured from the file: packed weights plus their scales and zero points, per weight.
        "bits_per_weight": round(8 * stored / elements, 4) if elements else None,
        "op_types_after": dict(Counter(n.op_type for n in result.graph.node)),
    }
