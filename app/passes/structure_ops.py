"""How each ONNX op carries, joins, creates or reads channels (the rules of `structure.analyze`).

A rule either follows the channels exactly or refuses (pins them); it never guesses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from app.passes.structure import AttrUse, Layout, SliceUse, ValueUse, Walker

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
MULTI_INPUT = ELEMENTWISE | {"Concat", "CastLike"}


def walk(w: Walker) -> None:
    """Visit every node in (ONNX-guaranteed) topological order."""
    for index, node in enumerate(w.graph.node):
        _visit(w, index, node)


def _visit(w: Walker, index: int, node: Any) -> None:
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
    from onnx import AttributeProto

    names: set[str] = set()
    graphs = [a.g for a in node.attribute if a.type == AttributeProto.GRAPH]
    graphs += [g for a in node.attribute if a.type == AttributeProto.GRAPHS for g in a.graphs]
    for graph in graphs:
        for inner in graph.node:
            names.update(inner.input)
            names.update(_subgraph_names(inner))
    return names


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _ints(w: Walker, node: Any, position: int, attr: str) -> list[int] | None:
    """An int list given as attribute `attr` (old opsets) or as constant input `position`."""
    if len(node.input) > position and node.input[position]:
        value = w.const(node.input[position])
        return None if value is None else [int(v) for v in value.reshape(-1)]
    found = _attr(node, attr)
    return None if found is None else [int(v) for v in found]


def _set_all(w: Walker, node: Any, layout: Layout) -> None:
    for name in node.output:
        if name:
            w.layouts[name] = layout


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
    lx, group = w.layouts.get(x), int(_attr(node, "group", 1))
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
    if weight is None or weight.ndim < 3 or int(_attr(node, "group", 1)) != 1:
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
    if weight is None or weight.ndim != 2 or int(_attr(node, "transA", 0)) != 0:
        w.refuse(node, "its weight is not a constant matrix, or A is transposed")
        return
    trans_b = int(_attr(node, "transB", 0))
    in_axis, out_axis = (1, 0) if trans_b else (0, 1)
    width = weight.shape[out_axis]
    la = w.layouts.get(a)
    if la is not None and (la.axis != 1 or len(la.ids) != weight.shape[in_axis]):
        w.refuse(node, "input features do not match the weight")
        return
    bias = w.const(bias_name) if bias_name else None
    if bias_name and (bias is None or (bias.size != 1 and bias.size != width)):
        w.refuse(node, "its bias C is not a constant vector")
        return
    if la is not None:
        w.consume(index, node, in_axis, la.ids, a)
    ids = w.weight_ids(node, node.input[1], out_axis, width)
    has_vector_bias = bias is not None and bias.size == width and width != 1
    _produce(w, index, node, ids, out_axis, bias_name if has_vector_bias else "")


def _matmul(w: Walker, index: int, node: Any) -> None:
    a, weight = node.input[0], w.const(node.input[1])
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
    _set_all(w, node, layout)


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
    axis = int(_attr(node, "axis", -1))
    if rank is None or lx.axis >= axis % rank:
        w.refuse(node, "it normalizes over the channel axis")
        return
    _set_all(w, node, lx)


def _pool(w: Walker, index: int, node: Any) -> None:
    lx = w.layouts[node.input[0]]
    if lx.axis != 1 or any(node.output[1:]):
        w.refuse(node, "channels are not on axis 1, or pooling indices are used")
        return
    w.layouts[node.output[0]] = lx


def _pad(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    pads = _ints(w, node, 1, "pads")
    has_axes = len(node.input) > 3 and bool(node.input[3])
    given = _ints(w, node, 3, "axes") if has_axes else None
    if rank is None or pads is None or (has_axes and given is None):
        w.refuse(node, "its pads are not constant")
        return
    axes = [a % rank for a in (given if given is not None else range(rank))]
    if lx.axis in axes:
        k = axes.index(lx.axis)
        if pads[k] != 0 or pads[k + len(axes)] != 0:
            w.refuse(node, "it pads the channel axis")
            return
    w.layouts[node.output[0]] = lx


def _resize(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    old = node.op_type == "Upsample" or w.opset < 11
    position = 1 if old else 2
    name = node.input[position] if len(node.input) > position else ""
    scales = w.const(name) if name else None
    if scales is None and _attr(node, "scales") is not None:
        scales = np.asarray(_attr(node, "scales"))
    sizes = not old and len(node.input) > 3 and bool(node.input[3])
    axes = _attr(node, "axes")
    if rank is None or scales is None or sizes:
        w.refuse(node, "it resizes to computed sizes")
        return
    axes = [a % rank for a in (axes if axes is not None else range(rank))]
    if lx.axis in axes and float(scales.reshape(-1)[axes.index(lx.axis)]) != 1.0:
        w.refuse(node, "it resizes the channel axis")
        return
    w.layouts[node.output[0]] = lx


def _softmax(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    axis = int(_attr(node, "axis", -1 if w.opset >= 13 else 1))
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    axis %= rank
    mixes = lx.axis == axis if w.opset >= 13 else lx.axis >= axis
    if mixes:
        w.refuse(node, "it normalizes over the channel axis")
        return
    w.layouts[node.output[0]] = lx


# ---------------------------------------------------------------- ops that join or move channels


def _elementwise(w: Walker, index: int, node: Any) -> None:
    names = list(node.input)
    ranks = [w.rank(n) for n in names]
    if any(r is None for r in ranks):
        w.refuse(node, "unknown rank")
        return
    out_rank = max(r for r in ranks if r is not None)
    found = [(k, w.layouts[n]) for k, n in enumerate(names) if n in w.layouts]
    axes = {lay.axis + out_rank - ranks[k] for k, lay in found}  # type: ignore[operator]
    first = found[0][1]
    if len(axes) != 1 or any(len(lay.ids) != len(first.ids) for _, lay in found):
        w.refuse(node, "it joins channels that do not line up")
        return
    axis = axes.pop()
    params = []
    for k, name in enumerate(names):
        if name in w.layouts:
            continue
        position = axis - (out_rank - ranks[k])  # type: ignore[operator]
        if position < 0:
            continue  # broadcast over the channels
        shape = w.shape(name)
        dim = shape[position] if shape is not None else None
        if dim == 1:
            continue
        if w.const(name) is None or dim != len(first.ids):
            w.refuse(node, f"it joins the channels with `{name}`, whose channels are fixed")
            return
        params.append(SliceUse(index, k, position, first.ids, "param"))
    for _, lay in found[1:]:
        w.channels.union_arrays(first.ids, lay.ids)
    w.slices.extend(params)
    _set_all(w, node, Layout(axis, first.ids))


def _concat(w: Walker, index: int, node: Any) -> None:
    rank = w.rank(node.output[0]) or w.rank(node.input[0])
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    axis = int(_attr(node, "axis", 0)) % rank
    found = [w.layouts.get(n) for n in node.input]
    axes = {lay.axis for lay in found if lay is not None}
    if axes == {axis}:
        parts = []
        for name, lay in zip(node.input, found, strict=True):
            shape = w.shape(name)
            dim = shape[axis] if shape is not None else None
            if lay is None and not isinstance(dim, int):
                w.refuse(node, f"unknown channel count of `{name}`")
                return
            reason = f"Concat node `{node.name}` joins them with the fixed channels of `{name}`"
            parts.append(lay.ids if lay is not None else w.channels.new(dim, -1, reason))  # type: ignore[arg-type]
        w.layouts[node.output[0]] = Layout(axis, np.concatenate(parts))
        return
    if len(axes) == 1 and all(lay is not None for lay in found):
        first = found[0]
        if all(len(lay.ids) == len(first.ids) for lay in found):  # type: ignore[union-attr]
            for lay in found[1:]:
                w.channels.union_arrays(first.ids, lay.ids)  # type: ignore[union-attr]
            w.layouts[node.output[0]] = first  # type: ignore[assignment]
            return
    w.refuse(node, "it concatenates channels with tensors that do not carry them alike")


def _flatten(w: Walker, index: int, node: Any) -> None:
    lx, shape = w.layouts[node.input[0]], w.shape(node.input[0])
    if shape is None:
        w.refuse(node, "unknown shape")
        return
    axis = int(_attr(node, "axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    inner, outer = shape[lx.axis + 1 :], shape[axis : lx.axis]
    if lx.axis < axis or not all(isinstance(d, int) for d in inner + outer):
        w.refuse(node, "it flattens the channels into the batch or over unknown dims")
        return
    ids = np.tile(np.repeat(lx.ids, _prod(inner)), _prod(outer))
    w.layouts[node.output[0]] = Layout(1, ids)


def _prod(dims: list[Any]) -> int:
    return int(math.prod(int(d) for d in dims))


def _reshape(w: Walker, index: int, node: Any) -> None:
    lx, shape, spec = w.layouts[node.input[0]], w.shape(node.input[0]), w.const(node.input[1])
    if shape is None or spec is None:
        w.refuse(node, "its target shape is computed at run time")
        return
    target = [int(v) for v in spec.reshape(-1)]
    copy_zero = not int(_attr(node, "allowzero", 0))
    c, count = lx.axis, len(lx.ids)
    found = _reshape_kind(target, shape, c, count, copy_zero)
    if found is None:
        w.refuse(node, "it splits the channel axis or moves it")
        return
    block = found
    ids = np.repeat(lx.ids, block)
    if target[c] > 0:
        w.values.append(ValueUse(index, 1, c, ids))
    w.layouts[node.output[0]] = Layout(c, ids)


def _reshape_kind(
    target: list[int], shape: list[Any], c: int, count: int, copy_zero: bool
) -> int | None:
    """How many target entries each channel becomes at axis `c`: 1 when the reshape keeps the
    channel axis as it is, the product of the trailing dims when it merges them into it (a
    flatten), None for anything else (a split or a move of the channel axis)."""
    if len(target) <= c or target.count(-1) > 1:
        return None
    resolved: list[Any] = []
    for j, value in enumerate(target):
        if copy_zero and value == 0:
            if j >= len(shape):
                return None
            resolved.append(shape[j])
        else:
            resolved.append(value)
    if any(resolved[i] != -1 and resolved[i] != shape[i] for i in range(c)):
        return None  # the axes before the channels must stay as they are
    trailing = shape[c + 1 :]
    size = _prod(trailing) if all(isinstance(d, int) for d in trailing) else None
    at_c, rest = resolved[c], resolved[c + 1 :]
    if not rest and size is not None and at_c in (count * size, -1):
        return size
    if at_c not in (count, -1):
        return None
    if -1 in rest:
        return 1  # the -1 takes the trailing dims' product, as before
    if size is not None and all(isinstance(v, int) and v > 0 for v in rest):
        return 1 if _prod(rest) == size else None
    return None


def _transpose(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    perm = _attr(node, "perm")
    if perm is None and rank is None:
        w.refuse(node, "unknown rank")
        return
    perm = list(perm) if perm is not None else list(reversed(range(rank)))  # type: ignore[arg-type]
    w.layouts[node.output[0]] = Layout(perm.index(lx.axis), lx.ids)


def _squeeze(w: Walker, index: int, node: Any) -> None:
    lx, shape = w.layouts[node.input[0]], w.shape(node.input[0])
    axes = _ints(w, node, 1, "axes")
    if shape is None or (axes is None and len(node.input) > 1 and node.input[1]):
        w.refuse(node, "unknown shape or axes")
        return
    if axes is None:
        if not all(isinstance(d, int) for d in shape):
            w.refuse(node, "unknown dims")
            return
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = [a % len(shape) for a in axes]
    if lx.axis in axes:
        w.refuse(node, "it squeezes the channel axis")
        return
    w.layouts[node.output[0]] = Layout(lx.axis - sum(a < lx.axis for a in axes), lx.ids)


def _unsqueeze(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    axes = _ints(w, node, 1, "axes")
    if rank is None or axes is None:
        w.refuse(node, "unknown rank or axes")
        return
    out_rank = rank + len(axes)
    inserted = {a % out_rank for a in axes}
    kept = [j for j in range(out_rank) if j not in inserted]
    w.layouts[node.output[0]] = Layout(kept[lx.axis], lx.ids)


def _reduce(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    from_input = len(node.input) > 1 and node.input[1]
    axes = _ints(w, node, 1, "axes")
    keep = int(_attr(node, "keepdims", 1))
    if rank is None or (from_input and axes is None):
        w.refuse(node, "unknown rank or axes")
        return
    if not axes:
        if int(_attr(node, "noop_with_empty_axes", 0)):
            w.layouts[node.output[0]] = lx
        else:
            w.refuse(node, "it reduces over every axis")
        return
    axes = [a % rank for a in axes]
    _reduced(w, node, lx, axes, keep)


def _arg(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    _reduced(w, node, lx, [int(_attr(node, "axis", 0)) % rank], int(_attr(node, "keepdims", 1)))


def _reduced(w: Walker, node: Any, lx: Layout, axes: list[int], keep: int) -> None:
    if lx.axis in axes:
        w.refuse(node, "it reduces over the channel axis")
        return
    axis = lx.axis if keep else lx.axis - sum(a < lx.axis for a in axes)
    w.layouts[node.output[0]] = Layout(axis, lx.ids)


def _gather(w: Walker, index: int, node: Any) -> None:
    lx, rank, q = w.layouts[node.input[0]], w.rank(node.input[0]), w.rank(node.input[1])
    if rank is None or q is None:
        w.refuse(node, "unknown rank")
        return
    axis = int(_attr(node, "axis", 0)) % rank
    if axis == lx.axis:
        w.refuse(node, "it selects channels")
        return
    w.layouts[node.output[0]] = Layout(lx.axis if axis > lx.axis else lx.axis - 1 + q, lx.ids)


def _slice(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if w.opset < 10:
        axes = _attr(node, "axes")
        starts = _attr(node, "starts")
        count = len(starts) if starts is not None else None
    else:
        axes = _ints(w, node, 3, "axes") if len(node.input) > 3 and node.input[3] else None
        shape = w.shape(node.input[1])
        count = shape[0] if shape is not None and isinstance(shape[0], int) else None
        if len(node.input) > 3 and node.input[3] and axes is None:
            count = None
    if rank is None or (axes is None and count is None):
        w.refuse(node, "unknown rank or axes")
        return
    axes = [int(a) % rank for a in (axes if axes is not None else range(count))]  # type: ignore[arg-type]
    if lx.axis in axes:
        w.refuse(node, "it slices the channel axis")
        return
    w.layouts[node.output[0]] = lx


def _split(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if rank is None or int(_attr(node, "axis", 0)) % rank == lx.axis:
        w.refuse(node, "it splits the channel axis")
        return
    _set_all(w, node, lx)


def _shape(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    start, end = int(_attr(node, "start", 0)), int(_attr(node, "end", rank))
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    if start <= lx.axis < end:
        w.refuse(node, "it reads the channel count")


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
    "Pad": _pad,
    "Resize": _resize,
    "Upsample": _resize,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Hardmax": _softmax,
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "ArgMax": _arg,
    "ArgMin": _arg,
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "Shape": _shape,
    "CastLike": _cast_like,
    **dict.fromkeys(UNARY - {"CastLike"}, _unary),
    **dict.fromkeys(ELEMENTWISE, _elementwise),
    **dict.fromkeys(POOLS, _pool),
    **dict.fromkeys(REDUCES, _reduce),
}
