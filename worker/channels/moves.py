"""Rules for the ops that move, join or reshape channels without weights (see structure_ops)."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.channels.state import (
    AttrUse,
    Layout,
    SliceUse,
    ValueUse,
    Walker,
    dims_product,
    node_attr,
)


def pad_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    pads = w.ints(node, 1, "pads")
    has_axes = len(node.input) > 3 and bool(node.input[3])
    given = w.ints(node, 3, "axes") if has_axes else None
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


def resize_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    old = node.op_type == "Upsample" or w.opset < 11
    position = 1 if old else 2
    name = node.input[position] if len(node.input) > position else ""
    scales = w.const(name) if name else None
    if scales is None and node_attr(node, "scales") is not None:
        scales = np.asarray(node_attr(node, "scales"))
    sizes = not old and len(node.input) > 3 and bool(node.input[3])
    axes = node_attr(node, "axes")
    if rank is None or scales is None or sizes:
        w.refuse(node, "it resizes to computed sizes")
        return
    axes = [a % rank for a in (axes if axes is not None else range(rank))]
    if lx.axis in axes and float(scales.reshape(-1)[axes.index(lx.axis)]) != 1.0:
        w.refuse(node, "it resizes the channel axis")
        return
    w.layouts[node.output[0]] = lx


def softmax_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    axis = int(node_attr(node, "axis", -1 if w.opset >= 13 else 1))
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    axis %= rank
    mixes = lx.axis == axis if w.opset >= 13 else lx.axis >= axis
    if mixes:
        w.refuse(node, "it normalizes over the channel axis")
        return
    w.layouts[node.output[0]] = lx


def elementwise_rule(w: Walker, index: int, node: Any) -> None:
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
    w.set_all(node, Layout(axis, first.ids))


def concat_rule(w: Walker, index: int, node: Any) -> None:
    rank = w.rank(node.output[0]) or w.rank(node.input[0])
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    axis = int(node_attr(node, "axis", 0)) % rank
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


def flatten_rule(w: Walker, index: int, node: Any) -> None:
    lx, shape = w.layouts[node.input[0]], w.shape(node.input[0])
    if shape is None:
        w.refuse(node, "unknown shape")
        return
    axis = int(node_attr(node, "axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    inner, outer = shape[lx.axis + 1 :], shape[axis : lx.axis]
    if lx.axis < axis or not all(isinstance(d, int) for d in inner + outer):
        w.refuse(node, "it flattens the channels into the batch or over unknown dims")
        return
    ids = np.tile(np.repeat(lx.ids, dims_product(inner)), dims_product(outer))
    w.layouts[node.output[0]] = Layout(1, ids)


def transpose_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    perm = node_attr(node, "perm")
    if perm is None and rank is None:
        w.refuse(node, "unknown rank")
        return
    perm = list(perm) if perm is not None else list(reversed(range(rank)))  # type: ignore[arg-type]
    w.layouts[node.output[0]] = Layout(perm.index(lx.axis), lx.ids)


def squeeze_rule(w: Walker, index: int, node: Any) -> None:
    lx, shape = w.layouts[node.input[0]], w.shape(node.input[0])
    axes = w.ints(node, 1, "axes")
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


def unsqueeze_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    axes = w.ints(node, 1, "axes")
    if rank is None or axes is None:
        w.refuse(node, "unknown rank or axes")
        return
    out_rank = rank + len(axes)
    inserted = {a % out_rank for a in axes}
    kept = [j for j in range(out_rank) if j not in inserted]
    w.layouts[node.output[0]] = Layout(kept[lx.axis], lx.ids)


def reduce_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    from_input = len(node.input) > 1 and node.input[1]
    axes = w.ints(node, 1, "axes")
    keep = int(node_attr(node, "keepdims", 1))
    if rank is None or (from_input and axes is None):
        w.refuse(node, "unknown rank or axes")
        return
    if not axes:
        if int(node_attr(node, "noop_with_empty_axes", 0)):
            w.layouts[node.output[0]] = lx
        else:
            w.refuse(node, "it reduces over every axis")
        return
    axes = [a % rank for a in axes]
    _reduced(w, node, lx, axes, keep)


def arg_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    _reduced(
        w, node, lx, [int(node_attr(node, "axis", 0)) % rank], int(node_attr(node, "keepdims", 1))
    )


def _reduced(w: Walker, node: Any, lx: Layout, axes: list[int], keep: int) -> None:
    if lx.axis in axes:
        w.refuse(node, "it reduces over the channel axis")
        return
    axis = lx.axis if keep else lx.axis - sum(a < lx.axis for a in axes)
    w.layouts[node.output[0]] = Layout(axis, lx.ids)


def gather_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank, q = w.layouts[node.input[0]], w.rank(node.input[0]), w.rank(node.input[1])
    if rank is None or q is None:
        w.refuse(node, "unknown rank")
        return
    axis = int(node_attr(node, "axis", 0)) % rank
    if axis == lx.axis:
        w.refuse(node, "it selects channels")
        return
    w.layouts[node.output[0]] = Layout(lx.axis if axis > lx.axis else lx.axis - 1 + q, lx.ids)


def slice_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if w.opset < 10:
        axes = node_attr(node, "axes")
        starts = node_attr(node, "starts")
        count = len(starts) if starts is not None else None
    else:
        axes = w.ints(node, 3, "axes") if len(node.input) > 3 and node.input[3] else None
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


def split_rule(w: Walker, index: int, node: Any) -> None:
    """Along another axis every part keeps the channels. Along the channel axis, given sizes
    are edited part by part; equal parts (a GLU's halves, packed q/k/v) stay equal because
    their channels go together, entry by entry."""
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    if int(node_attr(node, "axis", 0)) % rank != lx.axis:
        w.set_all(node, lx)
        return
    from_input = len(node.input) > 1 and bool(node.input[1])
    sizes = w.ints(node, 1, "split")
    count, parts = len(lx.ids), len(node.output)
    if sizes is None and (from_input or count % parts):
        w.refuse(node, "it splits the channel axis into computed or uneven parts")
        return
    if sizes is None:
        equal = lx.ids.reshape(parts, -1)
        for part in equal[1:]:
            w.channels.union_arrays(equal[0], part)
        sizes = [count // parts] * parts
    elif sum(sizes) != count:
        w.refuse(node, "its sizes do not add up to the channels")
        return
    offsets = np.cumsum([0, *sizes])
    for k, name in enumerate(node.output):
        part = lx.ids[offsets[k] : offsets[k + 1]]
        if from_input:
            w.values.append(ValueUse(index, 1, k, part))
        elif node_attr(node, "split") is not None:
            w.attrs.append(AttrUse(index, "split", k, part))
        if name:
            w.layouts[name] = Layout(lx.axis, part)


def shape_rule(w: Walker, index: int, node: Any) -> None:
    lx, rank = w.layouts[node.input[0]], w.rank(node.input[0])
    if rank is None:
        w.refuse(node, "unknown rank")
        return
    start, end = int(node_attr(node, "start", 0)), int(node_attr(node, "end", rank))
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    if start <= lx.axis < end:
        w.refuse(node, "it reads the channel count")


def pool_rule(w: Walker, index: int, node: Any) -> None:
    lx = w.layouts[node.input[0]]
    if lx.axis != 1 or any(node.output[1:]):
        w.refuse(node, "channels are not on axis 1, or pooling indices are used")
        return
    w.layouts[node.output[0]] = lx
