"""Our own ONNX -> PyTorch conversion, for passes that train an uploaded model (distill).

onnx2torch and onnx2pytorch import torchvision, which does not install beside our torch
(docs/field-notes.md), so this module interprets the ONNX graph itself. `OnnxModule` holds the
float weights (initializers or `Constant` tensors) as trainable `nn.Parameter`s (same values,
same dtypes) and every other initializer or Constant as a buffer, and its `forward` runs the nodes
in graph order with torch functional ops, eagerly: shape arithmetic (Shape -> Gather -> Concat ->
Reshape) runs on small int64 tensors and just works at any batch size or sequence length.
`write_back` copies the trained values into the initializers (and `Constant` nodes) of the ONNX
model they came from.

Which float initializers train: every one in a weight slot (Conv, ConvTranspose, Gemm, MatMul,
Gather tables, normalization scale/bias, PRelu slopes) and every other one with more than one
element (e.g. a bias added after a MatMul). Float tensors of `Constant` nodes follow the same
rule: some exporters (paddle2onnx, e.g. the PP-OCR models) store every weight as a `Constant`
node and have no initializer at all, and a student whose weights were all buffers would not
train. Resize's roi and scales never train (they are not differentiable). Single-element float
initializers elsewhere are constants of the computation (attention scaling, GELU coefficients)
and stay fixed, as do BatchNormalization's running mean and variance: BatchNormalization always
runs in its inference form, the only form an exported inference graph has.

An op outside `OPS`, an op of another domain (e.g. com.microsoft) or an attribute form that is not
implemented raises `JobFailure("unsupported_op")` when the module is built, never a silently wrong
result.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from app.core.errors import JobFailure
from worker.onnx_to_torch import resize_ops, shape_ops  # noqa: F401  (they register their ops)
from worker.onnx_to_torch.ops import (
    CHECKS,
    FROZEN_SLOTS,
    OPS,
    WEIGHT_SLOTS,
    Node,
    _attr_value,
    _constant_array,
    _opset,
    _tensor,
)


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


FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def _tensor_constants(nodes: list[Node]) -> dict[str, np.ndarray]:
    """Every `Constant` node's value by output name: held by the module, as buffers or, for the
    float tensors `_trainable` picks, as parameters."""
    return {node.outputs[0]: _constant_array(node) for node in nodes if node.op == "Constant"}


def _float_tensor_constants(nodes: list[Node]) -> dict[str, int]:
    """Element counts of the `Constant` nodes holding a float tensor (`value`), which may be
    weights; `value_float(s)` attributes are scalars or lists of the computation."""
    out = {}
    for node in nodes:
        value = node.attrs.get("value") if node.op == "Constant" else None
        if isinstance(value, np.ndarray) and _is_float(value):
            out[node.outputs[0]] = int(value.size)
    return out


def _is_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" or array.dtype.name == "bfloat16"


def _trainable(model: Any, nodes: list[Node]) -> set[str]:
    """Float initializers and `Constant` tensors that train (module docstring): weight slots,
    or more than 1 element."""
    candidates = {
        i.name: math.prod(i.dims) for i in model.graph.initializer if i.data_type in FLOAT_TYPES
    }
    candidates |= _float_tensor_constants(nodes)
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
    if any(i.data_location == TensorProto.EXTERNAL for i in model.graph.initializer):
        raise JobFailure(
            "model_rejected", "Initializers stored as external data are not supported."
        )


class OnnxModule(torch.nn.Module):
    """An ONNX graph as a trainable torch module (see the module docstring)."""

    def __init__(self, model: Any) -> None:
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
        for name, array in _tensor_constants(nodes).items():
            self._hold(name, array, name in trainable, used)
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


def to_torch(model: Any) -> Any:
    """An `OnnxModule` of an ONNX ModelProto."""
    return OnnxModule(model)


def write_back(module: Any, model: Any) -> Any:
    """A copy of `model` whose initializers and `Constant` tensors hold `module`'s trained
    parameter values.

    Same names, dtypes and shapes; every other part of the model is unchanged.

    Raises:
        JobFailure: a parameter has no initializer or `Constant` of that name and shape.
    """
    params = module.onnx_parameters()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    written = set()
    for init in out.graph.initializer:
        if init.name in params:
            init.CopyFrom(_trained_tensor(params[init.name], init))
            written.add(init.name)
    for node in out.graph.node:
        if node.op_type != "Constant" or not node.output or node.output[0] not in params:
            continue
        for attr in node.attribute:
            if attr.name == "value":
                attr.t.CopyFrom(_trained_tensor(params[node.output[0]], attr.t))
                written.add(node.output[0])
    if set(params) - written:
        raise JobFailure(
            "write_back_failed", f"No initializer for parameters {sorted(set(params) - written)}."
        )
    return out


def _trained_tensor(param: Any, tensor: Any) -> Any:
    """`tensor` (an initializer or a Constant's value) with the values of `param`, in its own
    name and dtype; `write_back_failed` where the shapes differ."""
    value = param.detach().cpu()
    if tuple(value.shape) != tuple(tensor.dims):
        raise JobFailure(
            "write_back_failed",
            f"Parameter {tensor.name} has shape {tuple(value.shape)}, "
            f"the initializer {tuple(tensor.dims)}.",
        )
    value = value.float() if value.dtype == torch.bfloat16 else value
    array = value.numpy().astype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    return numpy_helper.from_array(array, tensor.name)
