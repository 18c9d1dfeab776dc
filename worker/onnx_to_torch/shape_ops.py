"""Shape and indexing ops of our ONNX -> PyTorch conversion, registered into `OPS` on import
(module.py imports this module)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from worker.onnx_to_torch.ops import Node, _ints, _scalar, _tensor, _torch_pad, op


@op("Shape")
def _shape(node: Node, x: list[Any]) -> Any:
    dims = list(x[0].shape)[node.attr("start", 0) : node.attr("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=x[0].device)


@op("Size")
def _size(node: Node, x: list[Any]) -> Any:
    return torch.tensor(x[0].numel(), dtype=torch.int64, device=x[0].device)


@op("Flatten")
def _flatten(node: Node, x: list[Any]) -> Any:
    axis = node.attr("axis", 1) % (x[0].dim() + 1) if x[0].dim() else 0
    shape = list(x[0].shape)
    return x[0].reshape(math.prod(shape[:axis]), math.prod(shape[axis:]))


@op("Reshape")
def _reshape(node: Node, x: list[Any]) -> Any:
    shape = _ints(x[1])
    if not node.attr("allowzero", 0):  # 0 copies the input's dim at that position
        shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x[0].reshape(shape)


@op("Transpose")
def _transpose(node: Node, x: list[Any]) -> Any:
    perm = node.attr("perm") or list(reversed(range(x[0].dim())))
    return x[0].permute(list(perm))


@op("Concat")
def _concat(node: Node, x: list[Any]) -> Any:
    return torch.cat([t for t in x if t is not None], dim=node.attr("axis"))


@op("Split")
def _split(node: Node, x: list[Any]) -> Any:
    axis = node.attr("axis", 0) % x[0].dim()
    if len(x) > 1 and x[1] is not None:
        sizes = _ints(x[1])
    elif node.attr("split") is not None:
        sizes = list(node.attr("split"))
    else:
        dim, parts = x[0].shape[axis], node.attr("num_outputs", len(node.outputs))
        chunk = math.ceil(dim / parts)
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
    return list(torch.split(x[0], sizes, dim=axis))


def _slice_axis(t: Any, axis: int, start: int, end: int, step: int) -> Any:
    dim = t.shape[axis]
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        index = [slice(None)] * axis + [slice(min(max(start, 0), dim), min(max(end, 0), dim), step)]
        return t[tuple(index)]
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return t.index_select(axis, torch.arange(start, end, step, device=t.device))


@op("Slice")
def _slice(node: Node, x: list[Any]) -> Any:
    if node.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = list(node.attr("axes") or range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    out = x[0]
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        out = _slice_axis(out, axis % out.dim(), start, end, step)
    return out


def _axes(node: Node, x: list[Any]) -> list[int] | None:
    if len(x) > 1 and x[1] is not None:
        return _ints(x[1])
    axes = node.attr("axes")
    return None if axes is None else list(axes)


@op("Squeeze")
def _squeeze(node: Node, x: list[Any]) -> Any:
    axes = _axes(node, x)
    if axes is None:
        return x[0].squeeze()
    return x[0].squeeze(tuple(a % x[0].dim() for a in axes)) if axes else x[0]


@op("Unsqueeze")
def _unsqueeze(node: Node, x: list[Any]) -> Any:
    axes = _axes(node, x) or []
    rank = x[0].dim() + len(axes)
    out = x[0]
    for axis in sorted(a % rank for a in axes):
        out = out.unsqueeze(axis)
    return out


def _positive(index: Any, size: int) -> Any:
    index = index.long()
    return torch.where(index < 0, index + size, index)


@op("Gather")
def _gather(node: Node, x: list[Any]) -> Any:
    data, index = x
    axis = node.attr("axis", 0) % data.dim()
    index = _positive(index, data.shape[axis])
    out = data.index_select(axis, index.reshape(-1))
    return out.reshape(list(data.shape[:axis]) + list(index.shape) + list(data.shape[axis + 1 :]))


@op("GatherElements")
def _gather_elements(node: Node, x: list[Any]) -> Any:
    axis = node.attr("axis", 0) % x[0].dim()
    return torch.gather(x[0], axis, _positive(x[1], x[0].shape[axis]))


@op("Expand")
def _expand(node: Node, x: list[Any]) -> Any:
    return x[0].expand(torch.broadcast_shapes(tuple(x[0].shape), tuple(_ints(x[1]))))


@op("Tile")
def _tile(node: Node, x: list[Any]) -> Any:
    return x[0].repeat(_ints(x[1]))


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _check_pad(node: Node) -> str | None:
    return None if node.attr("mode", "constant") in PAD_MODES else f"Pad mode {node.attr('mode')}"


@op("Pad", check=_check_pad)
def _pad(node: Node, x: list[Any]) -> Any:
    rank = x[0].dim()
    if node.opset >= 11:
        pads = _ints(x[1])
        value = _scalar(x[2]) if len(x) > 2 and x[2] is not None else 0
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(rank))
    else:
        pads, value, axes = list(node.attr("pads")), node.attr("value", 0.0), list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis % rank], end[axis % rank] = pads[i], pads[len(axes) + i]
    first = next((a for a in range(rank) if begin[a] or end[a]), rank)
    pad = _torch_pad(begin[first:], end[first:])
    mode = PAD_MODES[node.attr("mode", "constant")]
    if mode == "constant":
        return F.pad(x[0], pad, value=value)
    return F.pad(x[0], pad, mode=mode)


@op("Trilu")
def _trilu(node: Node, x: list[Any]) -> Any:
    k = int(_scalar(x[1])) if len(x) > 1 and x[1] is not None else 0
    return torch.triu(x[0], k) if node.attr("upper", 1) else torch.tril(x[0], k)


@op("Range")
def _range(node: Node, x: list[Any]) -> Any:
    start, limit, delta = (_scalar(t) for t in x)
    return torch.arange(start, limit, delta, dtype=x[0].dtype, device=x[0].device)


@op("ConstantOfShape")
def _constant_of_shape(node: Node, x: list[Any]) -> Any:
    value = node.attr("value")
    array = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dtype = _tensor(array).dtype
    return torch.full(_ints(x[0]), array[0].item(), dtype=dtype, device=x[0].device)
