"""fp16 ONNX graphs with onnxconverter-common's converter and the repairs it needs (see
worker/passes/convert.py for why each exists), and the overflow check behind the automatic fp32
fallback."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxconverter_common import float16

from app.core.errors import JobFailure
from app.passes.convert import ConvertConfig

FP16_MAX = 65504.0
OVERFLOW_HEADROOM = 2.0
FLOAT, FLOAT16, BF16 = 1, 10, 16  # onnx.TensorProto element types


def _peak(array: Any) -> float:
    """The largest magnitude of a float array (inf counts), 0 for other types or empty arrays."""
    a = np.asarray(array)
    if a.dtype.kind != "f" or a.size == 0:
        return 0.0
    return float(np.nanmax(np.abs(a.astype(np.float64)), initial=0.0))


def overflowing_nodes(model: Any, probe: dict[str, np.ndarray]) -> dict[str, float]:
    """Nodes that read or write a value past the fp16 limit: node name -> largest magnitude."""
    limit = FP16_MAX / OVERFLOW_HEADROOM
    peaks = {k: _peak(v) for k, v in probe.items()}
    peaks.update((i.name, _peak(numpy_helper.to_array(i))) for i in model.graph.initializer)
    found = {}
    for node in model.graph.node:
        peak = max((peaks.get(t, 0.0) for t in [*node.input, *node.output] if t), default=0.0)
        if peak > limit:
            found[node.name] = peak
    return found


def name_nodes(model: Any) -> None:
    """Give unnamed nodes unique names: blocking, casts and the report go by node name."""
    used = {n.name for n in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _add_types(model: Any, probe: dict[str, np.ndarray]) -> None:
    """Record the measured element type of tensors shape inference may not type (contrib ops):
    the converter inserts casts only around tensors it has a type for."""
    graph = model.graph
    typed = {v.name for v in [*graph.value_info, *graph.input, *graph.output]}
    typed |= {i.name for i in graph.initializer}
    for name, value in probe.items():
        if name not in typed and np.asarray(value).dtype.kind in "fiub":
            elem = helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
            graph.value_info.append(helper.make_tensor_value_info(name, elem, None))


def _drop_initializer_types(graph: Any) -> None:
    """Remove value_info entries that restate an initializer's type (the dynamo exporter writes
    them): the converter turns them fp16 while a kept node's initializer stays fp32, leaving a
    graph that contradicts itself and a needless Cast in front of the kept node."""
    inits = {i.name for i in graph.initializer}
    kept = [v for v in graph.value_info if v.name not in inits]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _untie_initializers(model: Any, blocked: Callable[[Any], bool]) -> None:
    """Give fp32-kept nodes their own copy of a float initializer shared with converted nodes."""
    graph = model.graph
    floats = {i.name: i for i in graph.initializer if i.data_type == FLOAT}
    open_readers = {t for n in graph.node if not blocked(n) for t in n.input if t in floats}
    copies: dict[str, str] = {}
    for node in graph.node:
        if not blocked(node):
            continue
        for index, name in enumerate(node.input):
            if name in open_readers:
                if name not in copies:
                    copies[name] = f"{name}__fp32"
                    clone = graph.initializer.add()
                    clone.CopyFrom(floats[name])
                    clone.name = copies[name]
                node.input[index] = copies[name]


def to_fp16(
    source: Any, config: ConvertConfig, probe: dict[str, np.ndarray], kept: set[str]
) -> Any:
    """The fp16 model, with the nodes of `node_block_list` and `kept` left in fp32."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    _drop_initializer_types(model.graph)
    ops = blocked_ops(config)
    names = set(config.node_block_list) | kept
    _add_types(model, probe)
    _untie_initializers(model, lambda n: n.op_type in ops or n.name in names)
    try:
        with warnings.catch_warnings():  # it warns per tensor holding tiny values
            warnings.simplefilter("ignore")
            converted = float16.convert_float_to_float16(
                model,
                max_finite_val=float("inf"),
                keep_io_types=config.keep_io_types,
                op_block_list=sorted(ops),
                node_block_list=sorted(names),
            )
    except ValueError as exc:  # e.g. "The model is already converted to float16"
        raise JobFailure("conversion_failed", f"fp16 conversion failed: {exc}") from exc
    _retype_float_writers(converted.graph)
    _bypass_round_trips(converted.graph)
    if config.keep_io_types:
        _restore_output_types(converted.graph, source.graph)
    return converted


def _cast_to(node: Any) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


# Ops whose output element type is an attribute: the converter retypes their outputs' value_info
# to fp16 but leaves the attribute saying float.
TYPE_ATTRIBUTES = {
    "Cast": "to",
    "EyeLike": "dtype",
    "RandomNormal": "dtype",
    "RandomNormalLike": "dtype",
    "RandomUniform": "dtype",
}


def _retype_float_writers(graph: Any) -> None:
    """Make converted nodes that write float by attribute write fp16, as the converter declared.

    Exporters put a Cast to float into the graph (an attention mask turned into weights,
    `mask.to(hidden.dtype)`; a dtype copy): the converter turns the Cast's output value_info
    fp16 without touching its `to`, and ONNX Runtime refuses the graph ("Type (tensor(float16))
    of output arg ... of node Cast does not match expected type (tensor(float))"). Nodes kept in
    fp32 keep float value_info, so they are left alone; so are the converter's own casts."""
    declared = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    for node in graph.node:
        key = TYPE_ATTRIBUTES.get(node.op_type)
        attr = next((a for a in node.attribute if a.name == key), None)
        if attr is not None and attr.i == FLOAT and declared.get(node.output[0]) == FLOAT16:
            attr.i = FLOAT16


def _bypass_round_trips(graph: Any) -> None:
    """Feed Cast(fp32) nodes straight from the fp32 tensor a Cast(fp16) rounded (and drop the
    Cast(fp16) when nothing else reads it): fp32 -> fp16 -> fp32 turns 1e5 into inf."""
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input]}
    types.update((i.name, i.data_type) for i in graph.initializer)
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        up = producers.get(node.input[0]) if node.op_type == "Cast" else None
        if (
            up is not None
            and up.op_type == "Cast"
            and (_cast_to(node), _cast_to(up), types.get(up.input[0])) == (FLOAT, FLOAT16, FLOAT)
        ):
            node.input[0] = up.input[0]
    read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    dead = [n for n in graph.node if n.op_type == "Cast" and not set(n.output) & read]
    for node in dead:
        graph.node.remove(node)


def _restore_output_types(graph: Any, original: Any) -> None:
    """Cast back to fp32 any output the converter left fp16 (it does when the node that writes
    the output is kept in fp32)."""
    was = {o.name: o.type.tensor_type.elem_type for o in original.output}
    for output in graph.output:
        if was.get(output.name) == FLOAT and output.type.tensor_type.elem_type == FLOAT16:
            inner = f"{output.name}__fp16"
            for node in graph.node:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if i == output.name else i for i in node.input]
            graph.node.append(helper.make_node("Cast", [inner], [output.name], to=FLOAT))
            output.type.tensor_type.elem_type = FLOAT


def blocked_ops(config: ConvertConfig) -> set[str]:
    listed = config.op_block_list
    return set(float16.DEFAULT_OP_BLOCK_LIST if listed is None else listed)
