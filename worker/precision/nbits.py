"""4- and 8-bit weight-only quantization through ONNX Runtime's MatMulNBits quantizer: MatMul
weights become MatMulNBits (block-quantized, float activations) and, at 4 bits, embedding tables
become GatherBlockQuantized. Both are ONNX Runtime contrib ops.

`rtn` is ONNX Runtime's default blockwise quantizer (round to nearest, in C++, integer zero
points); `hqq` and `gptq` are its HQQ and GPTQ configurations. HQQ writes float zero points, which
GatherBlockQuantized cannot take: with `hqq` the embedding is quantized `rtn` in a pass of its
own. The GPTQ and 8-bit paths quantize MatMul only: embeddings then stay float.

A 4-bit embedding table is an int4 tensor, which needs opset 21: ONNX Runtime's quantizer then
only rewrites the opset number, which leaves ops whose form changed since the model's opset
invalid (an LLM exported at opset 17 fails to load: ReduceMean's `axes` became an input in 18).
So the model is converted to opset 21 first (onnx's version converter); where that fails, the
embedding stays float and the step says so.

The logits head (`head_nodes`: a MatMul whose output is a graph output, directly or through a
bias Add and shape-only ops) can be quantized at `head_bits` (8 where `bits` is 4), round to
nearest in blocks of up to HEAD_BLOCK (`_head_block`), in a pass of its own before the rest, as
llama.cpp's k-quants and ONNX Runtime GenAI's `k_quant_mixed` keep the output projection wider:
its argmax is the next token. Not the default: on a CPU without VNNI, MatMulNBits at 8 bits, and
with float zero points (`hqq`), computes slower than at 4 bits with integer ones (BENCHMARKS.md,
SmolLM2-135M: the default, and `hqq` with the 8-bit head). That model's layers come from GGUF
Q4_1 blocks (a float minimum per block), a grid that hqq's float zero points fit: it flatters
hqq.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

from app.core.errors import JobFailure
from app.passes.quantize import QuantizeConfig, chosen_op_types
from worker import onnx_io

QUANTIZED_OPS = ("MatMulNBits", "GatherBlockQuantized")
QUANT_AXES = (("MatMul", 0), ("Gather", 1))
HEAD_THROUGH = frozenset(
    {"Add", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze", "Transpose", "Flatten"}
)  # between a head MatMul and the graph output (Add: a bias, one computed input)
HEAD_BLOCK = 128  # the 8-bit head's largest blocks: a scale per 128 costs 1/4 bit per weight
INT4_OPSET = 21  # the first opset with int4/uint4 tensors (GatherBlockQuantized's packed table)
CONTRIB_WARNING = (
    "Weight-only quantization writes ONNX Runtime contrib ops (MatMulNBits, "
    "GatherBlockQuantized): the model runs in ONNX Runtime only."
)


def op_types(config: QuantizeConfig) -> tuple[list[str], list[str]]:
    """The op types this algorithm and width can quantize, and warnings for those it cannot."""
    chosen = chosen_op_types(config)
    if "Gather" in chosen and (config.bits != 4 or config.algorithm == "gptq"):
        why = "8 bits" if config.bits != 4 else "`algorithm: gptq`"
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

    Up to three passes of ONNX Runtime's quantizer, each leaving the others' nodes alone (a
    quantized node is MatMulNBits or GatherBlockQuantized, no longer MatMul or Gather): the
    logits head at `head_bits`, the embedding `rtn` where the algorithm cannot write it, then
    the rest with the algorithm.

    Raises:
        JobFailure: ONNX Runtime's quantizer refused the model.
    """
    ops, warnings = op_types(config)
    model = onnx_io.load_model(source)  # the quantizer reads the weights: external data too
    model, ops, opset_metrics, opset_warnings = _int4_opset(model, ops)
    warnings += opset_warnings
    before = float_weights(model, set(ops))
    rtn = config.model_copy(update={"algorithm": "rtn"})
    head_bits = config.head_bits or config.bits
    heads = []
    if "MatMul" in ops and head_bits != config.bits:
        heads = [n for n in head_nodes(model) if n not in config.exclude_nodes]
    if heads:  # the head alone at head_bits: every other MatMul excluded from this pass
        others = sorted({n.name for n in _all_nodes(model.graph) if n.op_type == "MatMul"})
        block = _head_block(model, heads, config.block_size)
        head = rtn.model_copy(update={"bits": head_bits, "block_size": block})
        excluded = [n for n in others if n not in heads]
        model = _process(model, head, ("MatMul",), excluded, None).model
    if "Gather" in ops and config.algorithm != "rtn":  # integer zero points: rtn's
        model = _process(model, rtn, ("Gather",), list(config.exclude_nodes), None).model
        ops = [t for t in ops if t != "Gather"]
    quantized = _process(model, config, tuple(ops), list(config.exclude_nodes), reader)
    quantized.save_model_to_file(str(out), use_external_data_format=onnx_io.is_large(source))
    metrics = _metrics(config, before, onnx.load(str(out)), heads) | opset_metrics
    return metrics, [*warnings, CONTRIB_WARNING]


def _head_block(model: Any, heads: list[str], block_size: int) -> int:
    """The heads' block size: the largest power of two up to HEAD_BLOCK that divides each head's
    input size (a padded block stores its padding: at K=576, 128 would cost more than 64), and
    never under `block_size`."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    sizes = [dims[n.input[1]][-2] for n in model.graph.node if n.name in heads]
    block = HEAD_BLOCK
    while block > block_size and any(k % block for k in sizes):
        block //= 2
    return max(block, block_size)


def _process(
    model: Any,
    config: QuantizeConfig,
    ops: tuple[str, ...],
    excluded: list[str],
    reader: CalibrationDataReader | None,
) -> Any:
    """One run of ONNX Runtime's quantizer over `ops` but `excluded`: its ONNXModel wrapper.

    Raises:
        JobFailure: the quantizer refused the model.
    """
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        bits=config.bits,
        block_size=config.block_size,
        is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level,
        nodes_to_exclude=excluded,
        op_types_to_quantize=ops,
        quant_axes=QUANT_AXES,
        algo_config=_algo_config(config, ops, reader),
    )
    try:
        quantizer.process()
    except Exception as exc:  # its errors are asserts and ValueErrors on graph forms it lacks
        raise JobFailure(
            "quantization_failed", f"Weight-only quantization failed: {type(exc).__name__}: {exc}"
        ) from exc
    return quantizer.model


def _all_nodes(graph: Any) -> Iterator[Any]:
    """The graph's nodes and those of its subgraphs (If, Loop, Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _all_nodes(sub)


def head_nodes(model: Any) -> list[str]:
    """The logits head: each named MatMul with a float weight whose output is a graph output,
    directly or through HEAD_THROUGH ops (an Add only where one input is computed: a bias, not a
    residual). None in a graph whose outputs come out of anything else (a norm, a softmax)."""
    weights = float_weights(model, {"MatMul"})
    producer = {out: node for node in model.graph.node for out in node.output}
    constant = {t.name for t in model.graph.initializer}
    constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    found: list[str] = []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in HEAD_THROUGH:
            computed = [i for i in node.input if i and i not in constant]
            if node.op_type == "Add" and len(computed) != 1:
                break
            node = producer.get(computed[0] if node.op_type == "Add" else node.input[0])
        if node is None or node.op_type != "MatMul" or not node.name:
            continue
        if node.name in weights and node.name not in found:
            found.append(node.name)
    return found


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _int4_opset(model: Any, ops: list[str]) -> tuple[Any, list[str], dict[str, Any], list[str]]:
    """The model at INT4_OPSET where a 4-bit embedding needs it (see the module's docstring):
    (model, op types, metrics, warnings). Without a conversion the embedding stays float."""
    before = _opset(model)
    if "Gather" not in ops or before >= INT4_OPSET:
        return model, ops, {}, []
    try:
        converted = onnx_io.convert_opset(model, INT4_OPSET)
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


def _bits(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "bits"), 4)  # GatherBlockQuantized: 4


def _metrics(
    config: QuantizeConfig, before: dict[str, int], result: Any, heads: list[str]
) -> dict[str, Any]:
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
        # The logits head's MatMul nodes quantized at `head_bits` (empty: none found, or
        # `head_bits` equal to `bits`), and how many quantized nodes each width has.
        "head_bits": (config.head_bits or config.bits) if heads else config.bits,
        "head_nodes": heads,
        "nodes_by_bits": {str(b): c for b, c in sorted(Counter(map(_bits, quantized)).items())},
        "nodes_quantized": len(quantized),
        "nodes_kept_float": len(kept),
        "float_nodes": kept[:500],
        "weights_quantized": elements,
        # Measured from the file: packed weights plus their scales and zero points, per weight.
        "bits_per_weight": round(8 * stored / elements, 4) if elements else None,
        "op_types_after": dict(Counter(n.op_type for n in result.graph.node)),
    }
