"""Rules for reshapes (keep, flatten into, or split into heads, the channel axis) and for the
activation x activation MatMuls of attention (see structure_ops)."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.channels import mha
from worker.channels.reshape_targets import Slot, edit_slot, resolve_shape, target_shape
from worker.channels.state import Layout, Walker, dims_product, node_attr


def reshape_rule(w: Walker, index: int, node: Any) -> None:
    """A reshape that keeps the channel axis, merges it with the trailing axes (a flatten), or
    splits it into (heads, width): then a unit is a whole head, and the heads axis carries it."""
    lx, shape = w.layouts[node.input[0]], w.shape(node.input[0])
    found = target_shape(w, index, node)
    if shape is None or found is None:
        w.refuse(node, "its target shape is computed at run time")
        return
    target, where = found
    copy_zero = not int(node_attr(node, "allowzero", 0))
    c, count = lx.axis, len(lx.ids)
    if _flatten_leading(w, index, node, target, where, shape):
        return
    if mha.packed_rule(w, index, node):
        return
    resolved = resolve_shape(target, shape, w.shape(node.output[0]), c, copy_zero)
    block = None if resolved is None else _merge_or_keep(resolved, shape, c, count)
    if resolved is not None and block is not None:
        ids = np.repeat(lx.ids, block)
        edit_slot(w, index, where[c], target[c], ids)
        w.layouts[node.output[0]] = Layout(c, ids)
        return
    width = None if resolved is None else _head_width(resolved, shape, c, count)
    if width is None:
        w.refuse(node, "it splits the channel axis or moves it")
        return
    heads = lx.ids.reshape(-1, width)
    for row in heads:
        w.channels.union_arrays(np.repeat(row[:1], width), row)
    edit_slot(w, index, where[c], target[c], heads[:, 0])
    w.layouts[node.output[0]] = Layout(c, heads[:, 0])


def _flatten_leading(
    w: Walker,
    index: int,
    node: Any,
    target: list[int | None],
    where: list[Slot | None],
    shape: list[Any],
) -> bool:
    """`Reshape(x, (-1, n))` merging every axis before the channels into one and the channels
    with the (static) axes after them (as before a Gemm): each channel becomes a block."""
    lx = w.layouts[node.input[0]]
    c, trailing = lx.axis, shape[lx.axis + 1 :]
    if c < 2 or len(target) != 2 or target[0] != -1 or not isinstance(target[1], int):
        return False
    if not all(isinstance(d, int) and d > 0 for d in trailing):
        return False
    size = dims_product(trailing)
    if target[1] != len(lx.ids) * size:
        return False
    ids = np.repeat(lx.ids, size)
    edit_slot(w, index, where[1], target[1], ids)
    w.layouts[node.output[0]] = Layout(1, ids)
    return True


def _merge_or_keep(resolved: list[Any], shape: list[Any], c: int, count: int) -> int | None:
    """How many target entries each channel becomes at axis `c`: 1 when the channel axis is
    kept as it is, the product of the trailing dims when they merge into it (a flatten)."""
    trailing = shape[c + 1 :]
    size = dims_product(trailing) if all(isinstance(d, int) for d in trailing) else None
    at_c, rest = resolved[c], resolved[c + 1 :]
    if not rest and size is not None and at_c in (count * size, -1):
        return size
    if at_c not in (count, -1):
        return None
    return 1 if _same_product(rest, trailing) else None


def _head_width(resolved: list[Any], shape: list[Any], c: int, count: int) -> int | None:
    """The width of each head when the channel axis is split into (heads, width), in order."""
    if len(resolved) < c + 2:
        return None
    heads, width = resolved[c], resolved[c + 1]
    if heads == -1 and isinstance(width, int) and width > 0 and count % width == 0:
        heads = count // width
    elif width == -1 and isinstance(heads, int) and heads > 0 and count % heads == 0:
        width = count // heads
    valid = isinstance(heads, int) and isinstance(width, int) and heads > 1 and width > 1
    if not valid or heads * width != count:
        return None
    return width if _same_product(resolved[c + 2 :], shape[c + 1 :]) else None


def _same_product(rest: list[Any], trailing: list[Any]) -> bool:
    """Whether target entries `rest` keep the trailing dims' product (a -1 among them does)."""
    if -1 in rest:
        return True
    known = all(isinstance(d, int) for d in trailing)
    return (
        known
        and all(isinstance(v, int) and v > 0 for v in rest)
        and (dims_product(rest) == dims_product(trailing))
    )


def matmul_rule(w: Walker, index: int, node: Any) -> None:
    """Activation x activation (attention): channels on batch axes (heads) pair up entry by
    entry; channels on A's rows or B's columns pass through; contracted channels are refused."""
    a, b = node.input[0], node.input[1]
    ra, rb = w.rank(a), w.rank(b)
    if ra is None or rb is None or ra < 2 or rb < 2:
        w.refuse(node, "unknown rank")
        return
    rank = max(ra, rb)
    la, lb = w.layouts.get(a), w.layouts.get(b)
    if (la is not None and la.axis == ra - 1) or (lb is not None and lb.axis == rb - 2):
        w.refuse(node, "it contracts the channel axis")
        return
    axes = []
    if la is not None:
        axes.append(rank - 2 if la.axis == ra - 2 else la.axis + rank - ra)
    if lb is not None:
        axes.append(rank - 1 if lb.axis == rb - 1 else lb.axis + rank - rb)
    first = la if la is not None else lb
    if len(set(axes)) != 1 or first is None:
        w.refuse(node, "its inputs carry channels on different axes")
        return
    axis = axes[0]
    if la is not None and lb is not None:
        if len(la.ids) != len(lb.ids):
            w.refuse(node, "its inputs carry different channels")
            return
        w.channels.union_arrays(la.ids, lb.ids)
    elif axis < rank - 2:
        other, other_rank = (b, rb) if la is not None else (a, ra)
        position = axis - (rank - other_rank)
        dims = w.shape(other)
        if position >= 0 and (dims is None or dims[position] != 1):
            w.refuse(node, f"it pairs the channels with fixed ones of `{other}`")
            return
    w.layouts[node.output[0]] = Layout(axis, first.ids)
