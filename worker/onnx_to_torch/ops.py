"""The op table of our ONNX -> PyTorch conversion (see module.py): one torch functional
implementation per ONNX op, plus the checks that refuse forms not implemented.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from app.core.errors import JobFailure


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
# Running statistics, and Resize's roi and scales (shape arithmetic, not differentiable).
FROZEN_SLOTS = {
    ("BatchNormalization", 3), ("BatchNormalization", 4), ("Resize", 1), ("Resize", 2),
}  # fmt: skip


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
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return f"ConvTranspose auto_pad {auto_pad}"
    return None


def _transpose_pads(node: Node, inp: Any, weight: Any, out_pad: list[int]) -> list[int]:
    """ONNX's pads of a ConvTranspose: given, or derived from `output_shape` / `auto_pad` (the
    spec's total_padding equations, as ONNX Runtime splits them)."""
    n = weight.dim() - 2
    auto_pad, shape = node.attr("auto_pad", "NOTSET"), node.attr("output_shape")
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if shape is None and auto_pad == "NOTSET":
        return list(node.attr("pads") or [0] * (2 * n))
    strides = list(node.attr("strides") or [1] * n)
    dilations = list(node.attr("dilations") or [1] * n)
    heads, tails = [], []
    for i in range(n):
        size = inp.shape[2 + i]
        full = strides[i] * (size - 1) + out_pad[i] + (weight.shape[2 + i] - 1) * dilations[i] + 1
        want = list(shape)[-n:][i] if shape is not None else size * strides[i]
        total = full - want
        if total < 0:
            raise JobFailure(
                "unsupported_op",
                f"ConvTranspose {node.name}: output_shape {want} exceeds the full output {full}.",
            )
        half = total // 2
        head, tail = (half, total - half) if auto_pad == "SAME_UPPER" else (total - half, half)
        heads.append(head)
        tails.append(tail)
    return heads + tails


@op("ConvTranspose", check=_check_conv_transpose)
def _conv_transpose(node: Node, x: list[Any]) -> Any:
    inp, weight, bias = x[0], x[1], x[2] if len(x) > 2 else None
    n = weight.dim() - 2
    strides = list(node.attr("strides") or [1] * n)
    dilations = list(node.attr("dilations") or [1] * n)
    out_pad = list(node.attr("output_padding") or [0] * n)
    pads = _transpose_pads(node, inp, weight, out_pad)
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
