"""What the channel analysis reads from an ONNX graph: constants (folded through the ops that
only move or cast them), inferred shapes and the opset."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from worker.channels.state import Dim, node_attr


def opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def constants(model: Any) -> dict[str, np.ndarray]:
    """Initializers (not overridable by a graph input) and `Constant` node values."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name not in inputs}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            value = helper.get_attribute_value(attr)
            if attr.name == "value":
                out[node.output[0]] = numpy_helper.to_array(value)
            elif attr.name in ("value_float", "value_floats"):
                out[node.output[0]] = np.asarray(value, dtype=np.float32)
            elif attr.name in ("value_int", "value_ints"):
                out[node.output[0]] = np.asarray(value, dtype=np.int64)
    for node in graph.node:  # e.g. a weight aliased by Identity, transposed, shape arithmetic
        folded = _fold(node, out) if node.domain in ("", "ai.onnx") else None
        if folded is not None:
            out[node.output[0]] = folded
    return out


FOLDED = frozenset({"Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze"})


def _fold(node: Any, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value of a node computing a constant by moving or casting a constant, else None.
    When the rewrite edits such a value it stores the result as a new initializer."""
    inputs = [constants.get(name) for name in node.input if name]
    if node.op_type not in FOLDED or not inputs or any(v is None for v in inputs):
        return None
    data = inputs[0]
    assert data is not None
    if node.op_type == "Identity":
        return data
    if node.op_type == "Transpose":
        return np.transpose(data, node_attr(node, "perm"))
    if node.op_type == "Cast":
        return data.astype(helper.tensor_dtype_to_np_dtype(node_attr(node, "to")))
    if node.op_type == "Reshape":
        target = [int(v) for v in inputs[1].reshape(-1)]  # type: ignore[union-attr]
        if not node_attr(node, "allowzero", 0):
            target = [data.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return data.reshape(target)
    axes = inputs[1] if len(inputs) > 1 else node_attr(node, "axes")
    if axes is None:
        return np.squeeze(data) if node.op_type == "Squeeze" else None
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if node.op_type == "Squeeze":
        return np.squeeze(data, axis=tuple(axes))
    return np.expand_dims(data, axis=tuple(axes))


def shapes(model: Any) -> dict[str, list[Dim] | None]:
    """Static dims (int), symbolic ones (str) or unknown (None) of every tensor inference sees."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a model inference rejects is walked with what it declares
        inferred = model
    graph = inferred.graph
    out: dict[str, list[Dim] | None] = {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            out[info.name] = None
            continue
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        out[info.name] = dims
    return out
