"""Our own ONNX -> PyTorch conversion, for passes that train an uploaded model (distill).

onnx2torch and onnx2pytorch import torchvision, which does not install beside our torch
(FIELD-NOTES.md), so this module interprets the ONNX graph itself. `OnnxModule` holds the float
initializers as trainable `nn.Parameter`s (same values, same dtypes) and every other initializer
or Constant as a buffer, and its `forward` runs the nodes in graph order with torch functional ops,
eagerly: shape arithmetic (Shape -> Gather -> Concat -> Reshape) runs on small int64 tensors and
just works at any batch size or sequence length. `write_back` copies the trained values into the
initializers of the ONNX model they came from.

Which float initializers train: every one in a weight slot (Conv, ConvTranspose, Gemm, MatMul,
Gather tables, normalization scale/bias, PRelu slopes) and every other one with more than one
element (e.g. a bias added after a MatMul). Single-element float initializers elsewhere are
constants of the computation (attention scaling, GELU coefficients) and stay fixed, as do
BatchNormalization's running mean and variance: BatchNormalization always runs in its inference
form, the only form an exported inference graph has.

An op outside `OPS`, an op of another domain (e.g. com.microsoft) or an attribute form that is not
implemented raises `JobFailure("unsupported_op")` when the module is built, never a silently wrong
result. torch is imported only when a module is built (`OnnxModule` resolves lazily), so the API
process can import this module.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.errors import JobFailure

torch: Any = None  # bound on first use by _torch(): this module must import without torch
F: Any = None


def _torch() -> None:
    global torch, F
    if torch is None:
        import torch as torch_module
        import torch.nn.functional as functional

        torch, F = torch_module, functional


@dataclass
class Node:
    """One ONNX node, parsed once: attributes as Python values (tensors as numpy arrays)."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    opset: int

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


Handler = Callable[[Node, list[Any]], Any]
OPS: dict[str, Handler] = {}
# Checks run at construction for ops whose attributes may ask for what is not implemented.
CHECKS: dict[str, Callable[[Node], str | None]] = {}
ONNX_TO_TORCH_DTYPE = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}
# (op, input index) slots that hold weights: float initializers there always train.
WEIGHT_SLOTS = {
    ("Conv", 1), ("Conv", 2), ("ConvTranspose", 1), ("ConvTranspose", 2),
    ("Gemm", 0), ("Gemm", 1), ("Gemm", 2), ("MatMul", 0), ("MatMul", 1), ("Gather", 0),
    ("BatchNormalization", 1), ("BatchNormalization", 2), ("LayerNormalization", 1),
    ("LayerNormalization", 2), ("InstanceNormalization", 1), ("InstanceNormalization", 2),
    ("PRelu", 1),
}  # fmt: skip
FROZEN_SLOTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}  # running statistics


def op(
    *names: str, check: Callable[[Node], str | None] | None = None
) -> Callable[[Handler], Handler]:
    """Register a handler for ONNX op types (and an optional construction-time check)."""

    def register(handler: Handler) -> Handler:
        for name in names:
            OPS[name] = handler
            if check is not None:
                CHECKS[name] = check
        return handler

    return register


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value.reshape(-1).tolist()]


def _scalar(value: Any) -> Any:
    return value.reshape(-1)[0].item()


def _dtype(onnx_type: int) -> Any:
    name = ONNX_TO_TORCH_DTYPE.get(int(onnx_type))
    if name is None:
        raise JobFailure("unsupported_op", f"ONNX tensor type {onnx_type} has no torch dtype.")
    return getattr(torch, name)


# ------------------------------------------------------------------ elementwise and activations

_UNARY: dict[str, Callable[[Any], Any]] = {
    "Identity": lambda x: x,
    "Neg": lambda x: -x,
    "Abs": lambda x: x.abs(),
    "Sqrt": lambda x: x.sqrt(),
    "Exp": lambda x: x.exp(),
    "Log": lambda x: x.log(),
    "Reciprocal": lambda x: x.reciprocal(),
    "Floor": lambda x: x.floor(),
    "Ceil": lambda x: x.ceil(),
    "Round": lambda x: x.round(),
    "Sign": lambda x: x.sign(),
    "Sin": lambda x: x.sin(),
    "Cos": lambda x: x.cos(),
    "Erf": lambda x: x.erf(),
    "Relu": lambda x: F.relu(x),
    "Sigmoid": lambda x: x.sigmoid(),
    "Tanh": lambda x: x.tanh(),
    "Softplus": lambda x: F.softplus(x),
    "Softsign": lambda x: F.softsign(x),
    "Mish": lambda x: F.mish(x),
    "HardSwish": lambda x: F.hardswish(x),
    "Not": lambda x: x.logical_not(),
    "IsNaN": lambda x: x.isnan(),
}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Pow": lambda a, b: torch.pow(a, b).to(a.dtype),
    "Equal": lambda a, b: torch.eq(a, b),
    "Less": lambda a, b: torch.lt(a, b),
    "LessOrEqual": lambda a, b: torch.le(a, b),
    "Greater": lambda a, b: torch.gt(a, b),
    "GreaterOrEqual": lambda a, b: torch.ge(a, b),
    "And": lambda a, b: torch.logical_and(a, b),
    "Or": lambda a, b: torch.logical_or(a, b),
    "Xor": lambda a, b: torch.logical_xor(a, b),
}
_VARIADIC: dict[str, Callable[[Any, Any], Any]] = {
    "Sum": lambda a, b: a + b,
    "Max": lambda a, b: torch.maximum(a, b),
    "Min": lambda a, b: torch.minimum(a, b),
}


@op(*_UNARY)
def _unary(node: Node, x: list[Any]) -> Any:
    return _UNARY[node.op](x[0])


@op(*_BINARY)
def _binary(node: Node, x: list[Any]) -> Any:
    return _BINARY[node.op](x[0], x[1])


@op(*_VARIADIC, "Mean")
def _variadic(node: Node, x: list[Any]) -> Any:
    if node.op == "Mean":
        return functools.reduce(_VARIADIC["Sum"], x) / len(x)
    return functools.reduce(_VARIADIC[node.op], x)


@op("Div")
def _div(node: Node, x: list[Any]) -> Any:
    a, b = x
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates


@op("Mod")
def _mod(node: Node, x: list[Any]) -> Any:
    return torch.fmod(x[0], x[1]) if node.attr("fmod", 0) else torch.remainder(x[0], x[1])


@op("Where")
def _where(node: Node, x: list[Any]) -> Any:
    return torch.where(x[0].bool(), x[1], x[2])


@op("LeakyRelu")
def _leaky_relu(node: Node, x: list[Any]) -> Any:
    return F.leaky_relu(x[0], node.attr("alpha", 0.01))


@op("Elu")
def _elu(node: Node, x: list[Any]) -> Any:
    return F.elu(x[0], node.attr("alpha", 1.0))


@op("Selu")
def _selu(node: Node, x: list[Any]) -> Any:
    alpha, gamma = (
        node.attr("alpha", 1.67326319217681884765625),
        node.attr("gamma", 1.05070102214813232421875),
    )
    return gamma * torch.where(x[0] > 0, x[0], alpha * (x[0].exp() - 1))


@op("PRelu")
def _prelu(node: Node, x: list[Any]) -> Any:
    return torch.where(x[0] >= 0, x[0], x[0] * x[1])


@op("HardSigmoid")
def _hard_sigmoid(node: Node, x: list[Any]) -> Any:
    return (node.attr("alpha", 0.2) * x[0] + node.attr("beta", 0.5)).clamp(0.0, 1.0)


@op("Gelu")
def _gelu(node: Node, x: list[Any]) -> Any:
    return F.gelu(x[0], approximate=node.attr("approximate", "none"))


@op("Clip")
def _clip(node: Node, x: list[Any]) -> Any:
    low = x[1] if len(x) > 1 and x[1] is not None else node.attr("min")
    high = x[2] if len(x) > 2 and x[2] is not None else node.attr("max")
    return torch.clamp(x[0], min=low, max=high)


@op("Softmax", "LogSoftmax")
def _softmax(node: Node, x: list[Any]) -> Any:
    fn = F.softmax if node.op == "Softmax" else F.log_softmax
    if node.opset >= 13:
        return fn(x[0], dim=node.attr("axis", -1))
    # Before opset 13 the input is coerced to 2-D at `axis` (default 1).
    axis = node.attr("axis", 1) % max(x[0].dim(), 1)
    flat = x[0].reshape(math.prod(x[0].shape[:axis]), -1)
    return fn(flat, dim=1).reshape(x[0].shape)


@op("Cast")
def _cast(node: Node, x: list[Any]) -> Any:
    return x[0].to(_dtype(node.attr("to")))


@op("CastLike")
def _cast_like(node: Node, x: list[Any]) -> Any:
    return x[0].to(x[1].dtype)


@op("Dropout")
def _dropout(node: Node, x: list[Any]) -> Any:
    return [x[0], torch.ones_like(x[0], dtype=torch.bool)]  # inference graph: identity


# ------------------------------------------------------------------ linear algebra, conv, norms


def _torch_pad(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX per-axis (begin..., end...) pads as F.pad's list, last axis first."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        out += [int(b), int(e)]
    return out


def _window(
    node: Node, x: Any, kernel: list[int]
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Strides, dilations, begin pads and end pads of a conv or pool, auto_pad resolved."""
    n = len(kernel)
    strides = list(node.attr("strides") or [1] * n)
    dilations = list(node.attr("dilations") or [1] * n)
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return strides, dilations, begin, end
    pads = [0] * (2 * n) if auto == "VALID" else list(node.attr("pads") or [0] * (2 * n))
    return strides, dilations, pads[:n], pads[n:]


@op("Conv")
def _conv(node: Node, x: list[Any]) -> Any:
    inp, weight, bias = x[0], x[1], x[2] if len(x) > 2 else None
    kernel = list(weight.shape[2:])
    strides, dilations, begin, end = _window(node, inp, kernel)
    padding: Any = begin
    if begin != end:
        inp, padding = F.pad(inp, _torch_pad(begin, end)), 0
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(kernel) - 1]
    return conv(inp, weight, bias, strides, padding, dilations, node.attr("group", 1))


def _check_conv_transpose(node: Node) -> str | None:
    if node.attr("output_shape") is not None or node.attr("auto_pad", "NOTSET") != "NOTSET":
        return "ConvTranspose with output_shape or auto_pad"
    return None


@op("ConvTranspose", check=_check_conv_transpose)
def _conv_transpose(node: Node, x: list[Any]) -> Any:
    inp, weight, bias = x[0], x[1], x[2] if len(x) > 2 else None
    n = weight.dim() - 2
    strides = list(node.attr("strides") or [1] * n)
    dilations = list(node.attr("dilations") or [1] * n)
    out_pad = list(node.attr("output_padding") or [0] * n)
    pads = list(node.attr("pads") or [0] * (2 * n))
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    y = conv(inp, weight, bias, strides, 0, out_pad, node.attr("group", 1), dilations)
    for axis in range(n):  # ONNX pads crop the full output, possibly asymmetrically
        size = y.shape[2 + axis] - pads[axis] - pads[n + axis]
        y = y.narrow(2 + axis, pads[axis], size)
    return y


@op("Gemm")
def _gemm(node: Node, x: list[Any]) -> Any:
    a, b, c = x[0], x[1], x[2] if len(x) > 2 else None
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    a = a.t() if node.attr("transA", 0) else a
    if node.attr("transB", 0) and alpha == 1.0 and beta == 1.0:
        return F.linear(a, b, c)
    y = a @ (b.t() if node.attr("transB", 0) else b)
    y = y * alpha if alpha != 1.0 else y
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


@op("MatMul")
def _matmul(node: Node, x: list[Any]) -> Any:
    return torch.matmul(x[0], x[1])


@op("Einsum")
def _einsum(node: Node, x: list[Any]) -> Any:
    return torch.einsum(node.attr("equation"), *x)


def _check_batch_norm(node: Node) -> str | None:
    if node.attr("training_mode", 0) or len([o for o in node.outputs if o]) > 1:
        return "training-mode BatchNormalization"
    return None


@op("BatchNormalization", check=_check_batch_norm)
def _batch_norm(node: Node, x: list[Any]) -> Any:
    inp, scale, bias, mean, var = x[:5]
    return F.batch_norm(inp, mean, var, scale, bias, False, 0.0, node.attr("epsilon", 1e-5))


@op("InstanceNormalization")
def _instance_norm(node: Node, x: list[Any]) -> Any:
    return F.instance_norm(x[0], weight=x[1], bias=x[2], eps=node.attr("epsilon", 1e-5))


def _single_output(node: Node) -> str | None:
    return f"{node.op} with extra outputs" if len([o for o in node.outputs if o]) > 1 else None


@op("LayerNormalization", check=_single_output)
def _layer_norm(node: Node, x: list[Any]) -> Any:
    inp, scale, bias = x[0], x[1], x[2] if len(x) > 2 else None
    shape = tuple(inp.shape[node.attr("axis", -1) % inp.dim() :])
    eps = node.attr("epsilon", 1e-5)
    if tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(inp, shape, scale, bias, eps)
    y = F.layer_norm(inp, shape, None, None, eps) * scale  # broadcastable scale and bias
    return y if bias is None else y + bias


# ------------------------------------------------------------------ pooling


def _pool_args(node: Node, x: Any) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    kernel = list(node.attr("kernel_shape"))
    strides, dilations, begin, end = _window(node, x, kernel)
    return kernel, strides, dilations, begin, end


def _torch_padding_ok(kernel: list[int], begin: list[int], end: list[int]) -> bool:
    return begin == end and all(p <= k // 2 for p, k in zip(begin, kernel, strict=True))


@op("MaxPool", check=_single_output)
def _max_pool(node: Node, x: list[Any]) -> Any:
    inp = x[0]
    kernel, strides, dilations, begin, end = _pool_args(node, inp)
    padding: Any = begin
    if not _torch_padding_ok(kernel, begin, end):
        inp, padding = F.pad(inp, _torch_pad(begin, end), value=-math.inf), 0
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel) - 1]
    return pool(inp, kernel, strides, padding, dilations, bool(node.attr("ceil_mode", 0)))


def _check_avg_pool(node: Node) -> str | None:
    if any(d != 1 for d in node.attr("dilations") or []):
        return "AveragePool with dilations"
    return None


@op("AveragePool", check=_check_avg_pool)
def _avg_pool(node: Node, x: list[Any]) -> Any:
    inp = x[0]
    kernel, strides, _dilations, begin, end = _pool_args(node, inp)
    ceil, include = bool(node.attr("ceil_mode", 0)), bool(node.attr("count_include_pad", 0))
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(kernel) - 1]
    if _torch_padding_ok(kernel, begin, end):
        return pool(inp, kernel, strides, begin, ceil, include)
    pad = _torch_pad(begin, end)
    summed = pool(F.pad(inp, pad), kernel, strides, 0, ceil, True)
    if include:
        return summed
    ones = F.pad(torch.ones_like(inp[:1, :1]), pad)
    return summed / pool(ones, kernel, strides, 0, ceil, True)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node: Node, x: list[Any]) -> Any:
    dims = tuple(range(2, x[0].dim()))
    if node.op == "GlobalMaxPool":
        return x[0].amax(dim=dims, keepdim=True)
    return x[0].mean(dim=dims, keepdim=True)


# ------------------------------------------------------------------ reductions


def _prod(x: Any, axes: list[int], keep: bool) -> Any:
    for axis in sorted(axes, reverse=True):  # from the last axis, so the others keep their index
        x = x.prod(dim=axis, keepdim=keep)
    return x


_REDUCE: dict[str, Callable[[Any, list[int], bool], Any]] = {
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: x.square().sum(dim=d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: x.square().sum(dim=d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
}


@op(*_REDUCE)
def _reduce(node: Node, x: list[Any]) -> Any:
    given = x[1] if len(x) > 1 and x[1] is not None else None
    axes = _ints(given) if given is not None else list(node.attr("axes") or [])
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return x[0]
        axes = list(range(x[0].dim()))
    axes = sorted({a % max(x[0].dim(), 1) for a in axes})
    return _REDUCE[node.op](x[0], axes, bool(node.attr("keepdims", 1)))


@op("ArgMax", "ArgMin")
def _arg(node: Node, x: list[Any]) -> Any:
    axis, keep = node.attr("axis", 0) % x[0].dim(), bool(node.attr("keepdims", 1))
    fn = torch.argmax if node.op == "ArgMax" else torch.argmin
    if not node.attr("select_last_index", 0):
        return fn(x[0], dim=axis, keepdim=keep)
    return x[0].shape[axis] - 1 - fn(x[0].flip(axis), dim=axis, keepdim=keep)


@op("CumSum")
def _cumsum(node: Node, x: list[Any]) -> Any:
    axis = int(_scalar(x[1]))
    y = x[0].flip(axis) if node.attr("reverse", 0) else x[0]
    out = y.cumsum(axis)
    out = out - y if node.attr("exclusive", 0) else out
    return out.flip(axis) if node.attr("reverse", 0) else out


# ------------------------------------------------------------------ shapes and indexing


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


def _check_constant(node: Node) -> str | None:
    if not any(k in node.attrs for k in CONSTANT_ATTRS):
        return "Constant with sparse or string values"
    return None


CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


@op("Constant", check=_check_constant)
def _constant(node: Node, x: list[Any]) -> Any:  # materialized as a buffer at construction
    raise AssertionError("Constant nodes become buffers when the module is built")


def _constant_array(node: Node) -> np.ndarray:
    if "value" in node.attrs:
        return np.asarray(node.attrs["value"])
    if "value_float" in node.attrs or "value_floats" in node.attrs:
        return np.asarray(node.attrs.get("value_float", node.attrs.get("value_floats")), np.float32)
    return np.asarray(node.attrs.get("value_int", node.attrs.get("value_ints")), np.int64)


def _tensor(array: np.ndarray) -> Any:
    """A torch tensor from a numpy array (bfloat16 through float32, which numpy lacks)."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    if array.dtype == object or array.dtype.kind in "SUO":
        raise JobFailure("unsupported_op", "String tensors have no PyTorch equivalent.")
    return torch.from_numpy(np.array(array, copy=True))


# ------------------------------------------------------------------ the graph as a module


def _attr_value(attribute: Any) -> Any:
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "data_type") and hasattr(value, "dims"):  # a TensorProto
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def parse_nodes(model: Any) -> list[Node]:
    """The graph's nodes with parsed attributes."""
    opset = _opset(model)
    return [
        Node(
            op=n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}",
            name=n.name,
            inputs=list(n.input),
            outputs=list(n.output),
            attrs={a.name: _attr_value(a) for a in n.attribute},
            opset=opset,
        )
        for n in model.graph.node
    ]


def unsupported_ops(nodes: list[Node]) -> list[str]:
    """Sorted descriptions of what in `nodes` cannot be converted (empty: all of it can)."""
    missing: set[str] = set()
    for node in nodes:
        if node.op not in OPS:
            missing.add(node.op)
        elif node.op in CHECKS and (reason := CHECKS[node.op](node)):
            missing.add(reason)
    return sorted(missing)


def refuse_unsupported(model: Any) -> list[Node]:
    """Parse the nodes; `JobFailure("unsupported_op")` names every op that cannot convert."""
    nodes = parse_nodes(model)
    missing = unsupported_ops(nodes)
    if missing:
        raise JobFailure(
            "unsupported_op",
            f"The model uses ops that ModelPress cannot convert to PyTorch: {', '.join(missing)}.",
        )
    return nodes


def _trainable(model: Any, nodes: list[Node]) -> set[str]:
    """Float initializers that train (module docstring): weight slots, or more than 1 element."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    candidates = {
        i.name: math.prod(i.dims) for i in model.graph.initializer if i.data_type in floats
    }
    weights, frozen = set(), set()
    for node in nodes:
        for index, name in enumerate(node.inputs):
            if (node.op, index) in WEIGHT_SLOTS:
                weights.add(name)
            elif (node.op, index) in FROZEN_SLOTS:
                frozen.add(name)
    chosen = {name for name, size in candidates.items() if name in weights or size > 1}
    return chosen - frozen


def _check_order(model: Any, nodes: list[Node]) -> None:
    known = {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    for node in nodes:
        absent = [name for name in node.inputs if name and name not in known]
        if absent:
            raise JobFailure(
                "model_rejected",
                f"Node {node.name or node.op} reads {absent} before any node writes them "
                "(the graph is not topologically sorted).",
            )
        known.update(node.outputs)


def _safe_key(name: str, used: set[str], prefix: str) -> str:
    key = prefix + (re.sub(r"\W", "_", name) or "_")
    while key in used:
        key += "_"
    used.add(key)
    return key


def _refuse_external(model: Any) -> None:
    from onnx import TensorProto

    if any(i.data_location == TensorProto.EXTERNAL for i in model.graph.initializer):
        raise JobFailure(
            "model_rejected", "Initializers stored as external data are not supported."
        )


@functools.cache
def _module_class() -> type:
    _torch()

    class OnnxModule(torch.nn.Module):
        """An ONNX graph as a trainable torch module (see the module docstring)."""

        def __init__(self, model: Any) -> None:
            from onnx import numpy_helper

            super().__init__()
            _refuse_external(model)
            nodes = refuse_unsupported(model)
            _check_order(model, nodes)
            trainable = _trainable(model, nodes)
            self.weights = torch.nn.ParameterDict()
            self.constants = torch.nn.Module()
            self._keys: dict[str, tuple[bool, str]] = {}  # ONNX name -> (trainable, key)
            used: set[str] = set()
            for init in model.graph.initializer:
                self._hold(init.name, numpy_helper.to_array(init), init.name in trainable, used)
            for node in nodes:
                if node.op == "Constant":
                    self._hold(node.outputs[0], _constant_array(node), False, used)
            self._nodes = [node for node in nodes if node.op != "Constant"]
            held = {i.name for i in model.graph.initializer}
            self.input_names = [v.name for v in model.graph.input if v.name not in held]
            self.output_names = [v.name for v in model.graph.output]

        def _hold(self, name: str, array: np.ndarray, train: bool, used: set[str]) -> None:
            key = _safe_key(name, used, "p_" if train else "c_")
            if train:
                self.weights[key] = torch.nn.Parameter(_tensor(array))
            else:
                self.constants.register_buffer(key, _tensor(array))
            self._keys[name] = (train, key)

        def onnx_parameters(self) -> dict[str, Any]:
            """The trainable parameters by ONNX initializer name."""
            return {name: self.weights[key] for name, (train, key) in self._keys.items() if train}

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            env = self._bind(args, kwargs)
            for node in self._nodes:
                values = [env[name] if name else None for name in node.inputs]
                try:
                    result = OPS[node.op](node, values)
                except JobFailure:
                    raise
                except Exception as exc:
                    raise JobFailure(
                        "conversion_failed",
                        f"Node {node.name or node.outputs[0]} ({node.op}) failed in PyTorch: {exc}",
                    ) from exc
                outputs = result if isinstance(result, list | tuple) else [result]
                for name, value in zip(node.outputs, outputs, strict=False):
                    if name:
                        env[name] = value
            results = tuple(env[name] for name in self.output_names)
            return results[0] if len(results) == 1 else results

        def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            env: dict[str, Any] = {}
            for name, (train, key) in self._keys.items():
                env[name] = self.weights[key] if train else getattr(self.constants, key)
            given = dict(zip(self.input_names, args, strict=False)) | kwargs
            if len(args) > len(self.input_names) or set(given) != set(self.input_names):
                raise TypeError(
                    f"expected inputs {self.input_names}, got {len(args)} + {sorted(kwargs)}"
                )
            for name, value in given.items():
                env[name] = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
            return env

    return OnnxModule


def __getattr__(name: str) -> Any:
    """`OnnxModule` is built on first access, so that importing this module needs no torch."""
    if name == "OnnxModule":
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_torch(model: Any) -> Any:
    """An `OnnxModule` of an ONNX ModelProto."""
    return _module_class()(model)


def write_back(module: Any, model: Any) -> Any:
    """A copy of `model` whose initializers hold `module`'s trained parameter values.

    Same names, dtypes and shapes; every other part of the model is unchanged.

    Raises:
        JobFailure: a parameter has no initializer of that name and shape in `model`.
    """
    import onnx
    from onnx import helper, numpy_helper

    _torch()
    params = module.onnx_parameters()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    written = set()
    for init in out.graph.initializer:
        param = params.get(init.name)
        if param is None:
            continue
        value = param.detach().cpu()
        if tuple(value.shape) != tuple(init.dims):
            raise JobFailure(
                "write_back_failed",
                f"Parameter {init.name} has shape {tuple(value.shape)}, "
                f"the initializer {tuple(init.dims)}.",
            )
        value = value.float() if value.dtype == torch.bfloat16 else value
        array = value.numpy().astype(helper.tensor_dtype_to_np_dtype(init.data_type))
        init.CopyFrom(numpy_helper.from_array(array, init.name))
        written.add(init.name)
    if set(params) - written:
        raise JobFailure(
            "write_back_failed", f"No initializer for parameters {sorted(set(params) - written)}."
        )
    return out
