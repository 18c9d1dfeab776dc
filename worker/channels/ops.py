"""How each ONNX op carries, joins, creates or reads channels (the rules of `structure.analyze`).

A rule either follows the channels exactly or refuses (pins them); it never guesses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import AttributeProto

from worker.channels import moves, reshape
from worker.channels.state import AttrUse, Layout, SliceUse, Walker, node_attr

Rule = Callable[[Walker, int, Any], None]

PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Ops whose output has the shape of their first input, value by value.
UNARY = frozenset(
    {
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "CastLike", "Ceil",
        "Celu", "Clip", "Cos", "Cosh", "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu",
        "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish",
        "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin",
        "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
    }
)  # fmt: skip
# Ops that combine inputs entry by entry, with numpy broadcasting.
ELEMENTWISE = frozenset(
    {
        "Add", "And", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Div", "Equal", "Greater",
        "GreaterOrEqual", "Less", "LessOrEqual", "Max", "Mean", "Min", "Mul", "Or", "Pow",
        "PRelu", "Sub", "Sum", "Where", "Xor",
    }
)  # fmt: skip
POOLS = frozenset(
    {
        "AveragePool", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "LpPool",
        "MaxPool",
    }
)  # fmt: skip
REDUCES = frozenset(
    {
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
    }
)  # fmt: skip
# Rules that read several inputs with layouts themselves; the others take channels on input 0.
MULTI_INPUT = ELEMENTWISE | {"Concat", "CastLike", "MatMul"}


def walk(w: Walker) -> None:
    """Visit every node in (ONNX-guaranteed) topological order."""
    for index, node in enumerate(w.graph.node):
        _visit(w, index, node)


def _visit(w: Walker, index: int, node: Any) -> None:
    if index in w.claimed:
        return
    has_layout = any(name in w.layouts for name in node.input)
    if node.domain not in ("", "ai.onnx"):
        w.refuse(node, f"an op of domain `{node.domain}`")
        return
    if _subgraph_names(node):
        w.refuse(node, "control flow (sub-graphs)")
        for name in _subgraph_names(node):
            w.pin_layout(name, f"used inside the sub-graph of `{node.name}`")
        return
    rule = RULES.get(node.op_type)
    if rule is None:
        if has_layout:
            w.refuse(node, "an op the channel analysis does not follow")
        return
    if not has_layout and node.op_type not in PRODUCERS:
        return
    if node.op_type not in MULTI_INPUT and any(n in w.layouts for n in node.input[1:]):
        w.refuse(node, "channels reach an input other than the data input")
        return
    if node.name in w.ignore:
        for name in node.input:
            w.pin_layout(name, f"node `{node.name}` is in ignore_nodes")
    rule(w, index, node)
    if node.name in w.ignore:
        for name in node.output:
            w.pin_layout(name, f"node `{node.name}` is in ignore_nodes")


def _subgraph_names(node: Any) -> set[str]:
    """Every tensor name a node's sub-graphs mention (outer-scope reads included)."""
    names: set[str] = set()
    graphs = [a.g for a in node.attribute if a.type == AttributeProto.GRAPH]
    graphs += [g for a in node.attribute if a.type == AttributeProto.GRAPHS for g in a.graphs]
    for graph in graphs:
        for inner in graph.node:
            names.update(inner.input)
            names.update(_subgraph_names(inner))
    return names


# ---------------------------------------------------------------- producers and consumers


def _conv(w: Walker, index: int, node: Any) -> None:
    weight, x = w.const(node.input[1]), node.input[0]
    bias_name = node.input[2] if len(node.input) > 2 else ""
    if weight is None or weight.ndim < 3:
        w.refuse(node, "its weight is not a constant")
        return
    bias = w.const(bias_name)
    if bias_name and (bias is None or bias.shape != weight.shape[:1]):
        w.refuse(node, "its bias is not a constant vector")
        return
    lx, group = w.layouts.get(x), int(node_attr(node, "group", 1))
    if lx is not None and lx.axis != 1:
        w.refuse(node, "channels are not on axis 1")
        return
    if group == 1:
        if lx is not None and len(lx.ids) != weight.shape[1]:
            w.refuse(node, "input channels do not match the weight")
            return
        if lx is not None:
            w.consume(index, node, 1, lx.ids, x)
        ids = w.weight_ids(node, node.input[1], 0, weight.shape[0])
        _produce(w, index, node, ids, 0, bias_name)
        return
    if weight.shape[1] == 1 and weight.shape[0] % group == 0:
        if lx is None:
            return  # depthwise over fixed channels: its output channels are fixed too
        if len(lx.ids) != group:
            w.refuse(node, "input channels do not match the groups")
            return
        out = np.repeat(lx.ids, weight.shape[0] // group)
        w.slices.append(SliceUse(index, 1, 0, out, "producer"))
        if bias_name:
            w.slices.append(SliceUse(index, 2, 0, out, "param"))
        w.attrs.append(AttrUse(index, "group", None, lx.ids))
        w.layouts[node.output[0]] = Layout(1, out)
        return
    w.refuse(node, f"grouped convolution ({group} groups must stay equal)")


def _produce(w: Walker, index: int, node: Any, ids: np.ndarray, axis: int, bias: str) -> None:
    w.slices.append(SliceUse(index, 1, axis, ids, "producer"))
    if bias:
        w.slices.append(SliceUse(index, 2, w.const(bias).ndim - 1, ids, "param"))  # type: ignore[union-attr]
    w.layouts[node.output[0]] = Layout(1, ids)


def _conv_transpose(w: Walker, index: int, node: Any) -> None:
    weight, x = w.const(node.input[1]), node.input[0]
    bias_name = node.input[2] if len(node.input) > 2 else ""
    lx = w.layouts.get(x)
    if weight is None or weight.ndim < 3 or int(node_attr(node, "group", 1)) != 1:
        w.refuse(node, "its weight is not a constant, or it is grouped")
        return
    bias = w.const(bias_name)
    if bias_name and (bias is None or bias.shape != weight.shape[1:2]):
        w.refuse(node, "its bias is not a constant vector")
        return
    if lx is not None and (lx.axis != 1 or len(lx.ids) != weight.shape[0]):
        w.refuse(node, "input channels do not match the weight")
        return
    if lx is not None:
        w.consume(index, node, 0, lx.ids, x)
    ids = w.weight_ids(node, node.input[1], 1, weight.shape[1])
    _produce(w, index, node, ids, 1, bias_name)


def _gemm(w: Walker, index: int, node: Any) -> None:
    weight, a = w.const(node.input[1]), node.input[0]
    bias_name = node.input[2] if len(node.input) > 2 else ""
    if weight is None or weight.ndim != 2 or int(node_attr(node, "transA", 0)) != 0:
        w.refuse(node, "its weight is not a constant matrix, or A is transposed")
        return
    trans_b = int(node_attr(node, "transB", 0))
    in_axis, out_axis = (1, 0) if trans_b else (0, 1)
    width = weight.shape[out_axis]
    la = w.layouts.get(a)
    if la is not None and (la.axis != 1 or len(la.ids) != weight.shape[in_axis]):
        w.refuse(node, "input features do not match the weight")
        return
    bias = w.const(bias_name) if bias_name else None
    vector = bias is not None and bias.size == width and bias.shape[-1] == width
    if bias_name and (bias is None or (bias.size != 1 and not vector)):
        w.refuse(node, "its bias C is not a constant scalar or row")
        return
    if la is not None:
        w.consume(index, node, in_axis, la.ids, a)
    ids = w.weight_ids(node, node.input[1], out_axis, width)
    _produce(w, index, node, ids, out_axis, bias_name if vector and width != 1 else "")


def _matmul(w: Walker, index: int, node: Any) -> None:
    a, weight = node.input[0], w.const(node.input[1])
    if weight is None and w.const(a) is None:
        reshape.matmul_rule(w, index, node)
        return
    rank = w.rank(a)
    if weight is None or weight.ndim != 2 or rank is None or rank < 2:
        w.refuse(node, "it does not multiply an activation by a constant matrix")
        return
    la = w.layouts.get(a)
    if la is not None and (la.axis != rank - 1 or len(la.ids) != weight.shape[0]):
        w.refuse(node, "channels are not on the contracted (last) axis")
        return
    if la is not None:
        w.consume(index, node, 0, la.ids, a)
    ids = w.weight_ids(node, node.input[1], 1, weight.shape[1])
    w.slices.append(SliceUse(index, 1, 1, ids, "producer"))
    w.layouts[node.output[0]] = Layout(rank - 1, ids)


# ---------------------------------------------------------------- ops that keep channels apart


def _unary(w: Walker, index: int, node: Any) -> None:
    layout = w.layouts.get(node.input[0])
    if layout is None:
        w.refuse(node, "channels reach an input other than the data input")
        return
    w.set_all(node, layout)


def _per_channel(w: Walker, index: int, node: Any) -> None:
    """BatchNormalization / InstanceNormalization: constant per-channel parameters."""
    lx = w.layouts[node.input[0]]
    params = [k for k in range(1, len(node.input)) if node.input[k]]
    extra = [o for o in node.output[1:] if o]
    shapes_ok = all(
        (v := w.const(node.input[k])) is not None and v.shape == (len(lx.ids),) for k in params
    )
    if lx.axis != 1 or not shapes_ok or extra:
        w.refuse(node, "not an inference-mode normalization over axis 1 with constant parameters")
        return
    for k in params:
        w.slices.append(SliceUse(index, k, 0, lx.ids, "param"))
    w.layouts[node.output[0]] = lx


def _layer_norm(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    axis = int(node_attr(node, "axis", -1))
    if rank is None or lx.axis >= axis % rank:
        w.refuse(node, "it normalizes over the channel axis")
        return
    w.set_all(node, lx)


def _cast_like(w: Walker, index: int, node: Any) -> None:
    layout = w.layouts.get(node.input[0])
    if layout is not None:
        w.layouts[node.output[0]] = layout


RULES: dict[str, Rule] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _per_channel,
    "InstanceNormalization": _per_channel,
    "LayerNormalization": _layer_norm,
    "Pad": moves.pad_rule,
    "Resize": moves.resize_rule,
    "Upsample": moves.resize_rule,
    "Softmax": moves.softmax_rule,
    "LogSoftmax": moves.softmax_rule,
    "Hardmax": moves.softmax_rule,
    "Concat": moves.concat_rule,
    "Flatten": moves.flatten_rule,
    "Reshape": reshape.reshape_rule,
    "Transpose": moves.transpose_rule,
    "Squeeze": moves.squeeze_rule,
    "Unsqueeze": moves.unsqueeze_rule,
    "ArgMax": moves.arg_rule,
    "ArgMin": moves.arg_rule,
    "Gather": moves.gather_rule,
    "Slice": moves.slice_rule,
    "Split": moves.split_rule,
    "Shape": moves.shape_rule,
    "CastLike": _cast_like,
    **dict.fromkeys(UNARY - {"CastLike"}, _unary),
    **dict.fromkeys(ELEMENTWISE, moves.elementwise_rule),
    **dict.fromkeys(POOLS, moves.pool_rule),
    **dict.fromkeys(REDUCES, moves.reduce_rule),
}
