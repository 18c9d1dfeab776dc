"""Our ONNX -> PyTorch conversion against onnxruntime: real exports, single ops, gradients.

Tolerance: the converted module's outputs match onnxruntime's within `ATOL` (max abs error) on
seeded inputs at two batch sizes (measured here: below 1e-6 for every network). The networks are
in tests/networks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from networks import CausalLm, ClassicCnn, conv_bn_net
from onnx import TensorProto, helper, numpy_helper

from app.core.errors import JobFailure
from worker.onnx_to_torch.module import OnnxModule, write_back

ATOL = 1e-4
RNG = np.random.default_rng(0)


def _ort(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _torch(module: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(**{name: torch.from_numpy(value) for name, value in feeds.items()})
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _max_error(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> float:
    proto = onnx.load(str(model)) if isinstance(model, Path) else model
    expected, got = _ort(model, feeds), _torch(OnnxModule(proto), feeds)
    assert [e.shape for e in expected] == [g.shape for g in got]
    assert [e.dtype for e in expected] == [g.dtype for g in got]
    return max(
        float(np.abs(e.astype(np.float64) - g).max(initial=0))
        for e, g in zip(expected, got, strict=True)
    )


def _export(module: torch.nn.Module, args: tuple, path: Path, dynamic: dict, **kw: Any) -> Path:
    shapes = {
        k: {a: torch.export.Dim(n, max=4096) for a, n in v.items()} for k, v in dynamic.items()
    }
    torch.onnx.export(
        module.eval(), args, str(path), dynamic_shapes=shapes, external_data=False, **kw
    )
    return path


@pytest.fixture(scope="module")
def classic_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx_torch") / "classic.onnx"
    return _export(ClassicCnn(), (torch.randn(2, 3, 32, 32),), path, {"x": {0: "batch"}})


@pytest.fixture(scope="module")
def causal_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx_torch") / "causal.onnx"
    ids = torch.randint(0, 50, (2, 9))
    return _export(CausalLm(), (ids,), path, {"ids": {0: "batch", 1: "seq"}})


@pytest.fixture(scope="module")
def batchnorm_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TorchScript export without constant folding: BatchNormalization stays in the graph."""
    torch.manual_seed(0)
    model = conv_bn_net()
    path = tmp_path_factory.mktemp("onnx_torch") / "bn.onnx"
    torch.onnx.export(
        model.eval(), (torch.randn(2, 3, 8, 8),), str(path), dynamo=False,
        do_constant_folding=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}},
    )  # fmt: skip
    return path


def _feeds(name: str, batch: int, length: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    if name == "mlp_onnx":
        return {"input": rng.standard_normal((batch, 32), dtype=np.float32)}
    if name == "cnn_onnx":
        return {"x": rng.standard_normal((batch, 3, 16, 16), dtype=np.float32)}
    if name == "transformer_onnx":
        return {"input_ids": rng.integers(0, 1000, (batch, length), dtype=np.int64)}
    if name == "classic_onnx":
        return {"x": rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)}
    if name == "batchnorm_onnx":
        return {"x": rng.standard_normal((batch, 3, 8, 8), dtype=np.float32)}
    return {"ids": rng.integers(0, 50, (batch, length), dtype=np.int64)}


NETWORKS = [
    "mlp_onnx", "cnn_onnx", "transformer_onnx", "classic_onnx", "causal_onnx", "batchnorm_onnx"
]  # fmt: skip


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("batch", [1, 5])
def test_network_matches_onnxruntime(network: str, batch: int, request: pytest.FixtureRequest):
    path = request.getfixturevalue(network)

    error = _max_error(path, _feeds(network, batch))

    assert error < ATOL


@pytest.mark.parametrize("network", ["transformer_onnx", "causal_onnx"])
def test_sequence_length_is_dynamic(network: str, request: pytest.FixtureRequest):
    path = request.getfixturevalue(network)

    errors = [_max_error(path, _feeds(network, 3, length)) for length in (5, 17)]

    assert max(errors) < ATOL


@pytest.mark.parametrize("network", NETWORKS)
def test_gradients_reach_every_parameter(network: str, request: pytest.FixtureRequest):
    module = OnnxModule(onnx.load(str(request.getfixturevalue(network))))
    feeds = {k: torch.from_numpy(v) for k, v in _feeds(network, 4).items()}

    module(**feeds).float().square().mean().backward()

    params = dict(module.named_parameters())
    assert params
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values()), [
        name for name, p in params.items() if p.grad is None or p.grad.abs().sum() == 0
    ]


def test_batchnorm_statistics_are_fixed_buffers_and_affine_trains(batchnorm_onnx: Path):
    model = onnx.load(str(batchnorm_onnx))
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")

    trained = set(OnnxModule(model).onnx_parameters())

    assert {bn.input[1], bn.input[2]} <= trained
    assert not {bn.input[3], bn.input[4]} & trained


def test_single_element_constants_do_not_train(transformer_onnx: Path):
    model = onnx.load(str(transformer_onnx))
    scalars = {
        i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and
        int(np.prod(i.dims)) == 1
    }  # fmt: skip

    trained = set(OnnxModule(model).onnx_parameters())

    assert scalars
    assert not scalars & trained
    assert "embed.weight" in trained


def test_write_back_copies_trained_values(cnn_onnx: Path, tmp_path: Path):
    model = onnx.load(str(cnn_onnx))
    module = OnnxModule(model)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    feeds = _feeds("cnn_onnx", 3)

    written = write_back(module, model)

    before = {i.name: (i.data_type, tuple(i.dims)) for i in model.graph.initializer}
    assert {i.name: (i.data_type, tuple(i.dims)) for i in written.graph.initializer} == before
    error = np.abs(_ort(written, feeds)[0] - _torch(module, feeds)[0]).max()
    assert error < ATOL
    assert np.abs(_ort(written, feeds)[0] - _ort(model, feeds)[0]).max() > 1e-2


def test_write_back_keeps_the_source_model_unchanged(mlp_onnx: Path):
    model = onnx.load(str(mlp_onnx))
    original = model.SerializeToString()
    module = OnnxModule(model)
    with torch.no_grad():
        next(module.parameters()).add_(1.0)

    write_back(module, model)

    assert model.SerializeToString() == original


# ------------------------------------------------------------------ single-op graphs


def _single(
    op: str,
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    outputs: int = 1,
    opset: int = 20,
    **attrs: Any,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One node whose inputs are `feeds` (graph inputs) then `consts` (initializers); an empty
    name in `consts` order skips an optional input."""
    consts = consts or {}
    names = list(feeds) + list(consts)
    out_names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(
        op, [n if not n.startswith("_") else "" for n in names], out_names, **attrs
    )
    graph = helper.make_graph(
        [node],
        op,
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in feeds.items()
        ],
        [helper.make_empty_tensor_value_info(n) for n in out_names],
        [numpy_helper.from_array(v, n) for n, v in consts.items() if not n.startswith("_")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model, feeds


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


SINGLE_OPS: dict[str, Any] = {
    "conv_asymmetric_pads_dilation_groups": lambda: _single(
        "Conv",
        {"x": _x(2, 4, 9, 9)},
        {"w": _x(6, 2, 3, 3), "b": _x(6)},
        pads=[1, 0, 2, 1],
        strides=[2, 1],
        dilations=[1, 2],
        group=2,
    ),
    "conv1d_same_lower": lambda: _single(
        "Conv", {"x": _x(2, 3, 10)}, {"w": _x(4, 3, 4)}, auto_pad="SAME_LOWER", strides=[3]
    ),
    "conv_transpose": lambda: _single(
        "ConvTranspose",
        {"x": _x(2, 4, 5, 5)},
        {"w": _x(4, 3, 3, 3), "b": _x(3)},
        strides=[2, 2],
        pads=[1, 0, 0, 1],
        output_padding=[1, 1],
    ),
    "gemm_alpha_beta_transposes": lambda: _single(
        "Gemm",
        {"a": _x(5, 3)},
        {"b": _x(4, 5), "c": _x(4)},
        alpha=0.5,
        beta=2.0,
        transA=1,
        transB=1,
    ),
    "gemm_linear_broadcast_bias": lambda: _single(
        "Gemm", {"a": _x(3, 5)}, {"b": _x(4, 5), "c": _x(3, 1)}, transB=1
    ),
    "matmul_batched": lambda: _single("MatMul", {"a": _x(2, 3, 4, 5), "b": _x(3, 5, 6)}),
    "batch_norm": lambda: _single(
        "BatchNormalization",
        {"x": _x(2, 3, 4, 4)},
        {"s": _x(3), "b": _x(3), "m": _x(3), "v": np.abs(_x(3)) + 0.5},
        epsilon=1e-3,
    ),
    "instance_norm": lambda: _single(
        "InstanceNormalization", {"x": _x(2, 3, 5, 5)}, {"s": _x(3), "b": _x(3)}
    ),
    "layer_norm_axis1_no_bias": lambda: _single(
        "LayerNormalization", {"x": _x(2, 3, 4)}, {"s": _x(3, 4)}, axis=1
    ),
    "max_pool_ceil": lambda: _single(
        "MaxPool",
        {"x": _x(2, 3, 8, 8)},
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
    ),
    "max_pool_asymmetric": lambda: _single(
        "MaxPool", {"x": _x(2, 3, 9, 9)}, kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]
    ),
    "avg_pool_asymmetric_exclude_pad": lambda: _single(
        "AveragePool",
        {"x": _x(2, 3, 9, 9)},
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 0, 0, 1],
    ),
    "avg_pool_include_pad": lambda: _single(
        "AveragePool",
        {"x": _x(2, 3, 9, 9)},
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
    ),
    "global_average_pool": lambda: _single("GlobalAveragePool", {"x": _x(2, 3, 5, 4)}),
    "global_max_pool": lambda: _single("GlobalMaxPool", {"x": _x(2, 3, 5, 4)}),
    "clip_inputs": lambda: _single(
        "Clip", {"x": _x(3, 4)}, {"lo": np.array(-0.3, np.float32), "hi": np.array(0.5, np.float32)}
    ),
    "clip_only_max": lambda: _single(
        "Clip", {"x": _x(3, 4)}, {"_": _x(1), "hi": np.array(0.2, np.float32)}
    ),
    "hard_sigmoid": lambda: _single("HardSigmoid", {"x": _x(3, 4) * 4}, alpha=0.3, beta=0.4),
    "hard_swish": lambda: _single("HardSwish", {"x": _x(3, 4) * 4}),
    "leaky_relu": lambda: _single("LeakyRelu", {"x": _x(3, 4)}, alpha=0.2),
    "elu": lambda: _single("Elu", {"x": _x(3, 4)}, alpha=0.7),
    "selu": lambda: _single("Selu", {"x": _x(3, 4)}),
    "prelu": lambda: _single("PRelu", {"x": _x(2, 3, 4)}, {"s": _x(3, 1)}),
    "softplus": lambda: _single("Softplus", {"x": _x(3, 4)}),
    "mish": lambda: _single("Mish", {"x": _x(3, 4)}),
    "gelu_tanh": lambda: _single("Gelu", {"x": _x(3, 4)}, approximate="tanh"),
    "erf": lambda: _single("Erf", {"x": _x(3, 4)}),
    "sigmoid": lambda: _single("Sigmoid", {"x": _x(3, 4)}),
    "tanh": lambda: _single("Tanh", {"x": _x(3, 4)}),
    "softmax_opset11_coerces_2d": lambda: _single("Softmax", {"x": _x(2, 3, 4)}, opset=11, axis=1),
    "log_softmax_axis1": lambda: _single("LogSoftmax", {"x": _x(2, 3, 4)}, axis=1),
    "pow_float_exponent": lambda: _single(
        "Pow", {"x": np.abs(_x(3, 4))}, {"e": np.array(1.5, np.float32)}
    ),
    "sqrt": lambda: _single("Sqrt", {"x": np.abs(_x(3, 4))}),
    "log": lambda: _single("Log", {"x": np.abs(_x(3, 4)) + 0.1}),
    "exp_neg_abs": lambda: _single("Exp", {"x": _x(3, 4)}),
    "div_float": lambda: _single("Div", {"a": _x(3, 4)}, {"b": np.abs(_x(4)) + 0.5}),
    "div_int_truncates": lambda: _single("Div", {"a": _i(-7, 7, 9, -9)}, {"b": _i(2, -2, 4, 4)}),
    "mod_int": lambda: _single("Mod", {"a": _i(-7, 7, 9, -9)}, {"b": _i(3, -3, 4, 4)}),
    "sub_broadcast": lambda: _single("Sub", {"a": _x(2, 1, 4)}, {"b": _x(3, 1)}),
    "sum_variadic": lambda: _single("Sum", {"a": _x(3, 4), "b": _x(4), "c": _x(3, 1)}),
    "max_variadic": lambda: _single("Max", {"a": _x(3, 4), "b": _x(4)}),
    "mean_variadic": lambda: _single("Mean", {"a": _x(3, 4), "b": _x(4)}),
    "flatten_axis2": lambda: _single("Flatten", {"x": _x(2, 3, 4, 5)}, axis=2),
    "reshape_zero_and_minus_one": lambda: _single("Reshape", {"x": _x(2, 3, 4)}, {"s": _i(0, -1)}),
    "reshape_allowzero_empty": lambda: _single(
        "Reshape", {"x": np.zeros((0, 3), np.float32)}, {"s": _i(3, 0)}, allowzero=1
    ),
    "transpose_default": lambda: _single("Transpose", {"x": _x(2, 3, 4)}),
    "split_sizes": lambda: _single("Split", {"x": _x(2, 7)}, {"s": _i(3, 4)}, outputs=2, axis=1),
    "split_num_outputs_uneven": lambda: _single(
        "Split", {"x": _x(2, 7)}, outputs=3, opset=18, axis=1, num_outputs=3
    ),
    "slice_negative_steps": lambda: _single(
        "Slice",
        {"x": _x(5, 4, 8)},
        {"st": _i(-1, 6), "en": _i(-(2**62), 0), "ax": _i(0, 2), "sp": _i(-1, -2)},
    ),
    "slice_ends_past_dim": lambda: _single(
        "Slice", {"x": _x(5, 4, 8)}, {"st": _i(1, -3), "en": _i(2**62, 100), "ax": _i(1, -1)}
    ),
    "slice_opset9_attrs": lambda: _single(
        "Slice", {"x": _x(5, 4)}, opset=9, starts=[1], ends=[-1], axes=[0]
    ),
    "squeeze_axes": lambda: _single("Squeeze", {"x": _x(1, 3, 1, 4)}, {"a": _i(-2, 0)}),
    "squeeze_all": lambda: _single("Squeeze", {"x": _x(1, 3, 1, 4)}),
    "unsqueeze_axes": lambda: _single("Unsqueeze", {"x": _x(3, 4)}, {"a": _i(-1, 0)}),
    "concat": lambda: _single("Concat", {"a": _x(2, 3), "b": _x(2, 5)}, axis=-1),
    "gather_negative_indices_axis1": lambda: _single(
        "Gather", {"x": _x(3, 5, 2)}, {"i": np.array([[-1, 0], [2, -5]], np.int64)}, axis=1
    ),
    "gather_scalar_index": lambda: _single(
        "Gather", {"x": _x(3, 5)}, {"i": np.array(-1, np.int64)}
    ),
    "gather_elements": lambda: _single(
        "GatherElements",
        {"x": _x(3, 4)},
        {"i": np.array([[0, -1], [2, 1], [3, 3]], np.int64)},
        axis=1,
    ),
    "shape_slice": lambda: _single("Shape", {"x": _x(2, 3, 4, 5)}, start=1, end=-1),
    "constant_of_shape_int": lambda: _single(
        "ConstantOfShape", {"s": _i(2, 3)}, value=numpy_helper.from_array(np.array([7], np.int64))
    ),
    "constant_of_shape_default": lambda: _single("ConstantOfShape", {"s": _i(4)}),
    "cast_float_to_int": lambda: _single("Cast", {"x": _x(3, 4) * 5}, to=TensorProto.INT32),
    "expand_bidirectional": lambda: _single("Expand", {"x": _x(3, 1)}, {"s": _i(2, 1, 4)}),
    "where_equal": lambda: _single(
        "Where", {"c": np.array([[True, False]]), "a": _x(3, 2), "b": _x(2)}
    ),
    "equal_int": lambda: _single("Equal", {"a": _i(1, 2, 3)}, {"b": _i(1, 0, 3)}),
    "less": lambda: _single("Less", {"a": _x(3, 4)}, {"b": _x(4)}),
    "not": lambda: _single("Not", {"a": np.array([True, False])}),
    "reduce_sum_axes_input": lambda: _single(
        "ReduceSum", {"x": _x(2, 3, 4)}, {"a": _i(0, -1)}, keepdims=0
    ),
    "reduce_sum_noop_empty": lambda: _single("ReduceSum", {"x": _x(2, 3)}, noop_with_empty_axes=1),
    "reduce_mean_opset13_attr": lambda: _single(
        "ReduceMean", {"x": _x(2, 3, 4)}, opset=13, axes=[1]
    ),
    "reduce_mean_all": lambda: _single("ReduceMean", {"x": _x(2, 3, 4)}, keepdims=0),
    "reduce_max_opset18": lambda: _single("ReduceMax", {"x": _x(2, 3, 4)}, {"a": _i(1)}, opset=18),
    "reduce_prod": lambda: _single(
        "ReduceProd", {"x": _x(2, 3, 4)}, {"a": _i(0, 2)}, opset=18, keepdims=0
    ),
    "reduce_l2": lambda: _single("ReduceL2", {"x": _x(2, 3, 4)}, {"a": _i(2)}, opset=18),
    "argmax_last_index": lambda: _single(
        "ArgMax", {"x": np.array([[1, 3, 3], [2, 2, 0]], np.float32)}, axis=1, select_last_index=1
    ),
    "range_int": lambda: _single(
        "Range",
        {"s": np.array(2, np.int64)},
        {"l": np.array(11, np.int64), "d": np.array(3, np.int64)},
    ),
    "range_float_negative": lambda: _single(
        "Range",
        {"s": np.array(1.0, np.float32)},
        {"l": np.array(-2.0, np.float32), "d": np.array(-0.5, np.float32)},
    ),
    "trilu_lower_k": lambda: _single(
        "Trilu", {"x": _x(2, 4, 5)}, {"k": np.array(-1, np.int64)}, upper=0
    ),
    "trilu_upper": lambda: _single("Trilu", {"x": _x(4, 4)}),
    "tile": lambda: _single("Tile", {"x": _x(2, 3)}, {"r": _i(2, 3)}),
    "einsum": lambda: _single(
        "Einsum", {"a": _x(2, 3, 4), "b": _x(2, 4, 5)}, equation="bij,bjk->bik"
    ),
    "cumsum_exclusive_reverse": lambda: _single(
        "CumSum", {"x": _x(3, 4)}, {"a": np.array(1, np.int64)}, exclusive=1, reverse=1
    ),
    "pad_constant_axes": lambda: _single(
        "Pad",
        {"x": _x(2, 3, 4)},
        {"p": _i(1, 2, 0, 3), "v": np.array(0.5, np.float32), "a": _i(0, 2)},
        opset=18,
    ),
    "pad_reflect": lambda: _single(
        "Pad", {"x": _x(1, 2, 5, 5)}, {"p": _i(0, 0, 1, 2, 0, 0, 2, 1)}, mode="reflect"
    ),
    "pad_edge": lambda: _single(
        "Pad", {"x": _x(1, 2, 5, 5)}, {"p": _i(0, 0, 1, 2, 0, 0, 2, 1)}, mode="edge"
    ),
    "dropout_identity": lambda: _single("Dropout", {"x": _x(3, 4)}),
    "identity": lambda: _single("Identity", {"x": _x(3, 4)}),
}


@pytest.mark.parametrize("case", sorted(SINGLE_OPS))
def test_single_op_matches_onnxruntime(case: str):
    model, feeds = SINGLE_OPS[case]()

    error = _max_error(model, feeds)

    assert error < ATOL


def test_constant_tensors_train_like_initializers_and_integer_constants_do_not():
    """A float tensor of more than one element trains wherever it is held (paddle2onnx writes
    every weight as a Constant node); shape arithmetic (`value_ints`) stays a buffer."""
    value = numpy_helper.from_array(np.array([1.5, -2.0], np.float32))
    nodes = [
        helper.make_node("Constant", [], ["c"], value=value),
        helper.make_node("Constant", [], ["k"], value_ints=[1, 2]),
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Reshape", ["m", "k"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_empty_tensor_value_info("y")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    feeds = {"x": _x(2)}

    error = _max_error(model, feeds)

    assert error < ATOL
    assert set(OnnxModule(model).onnx_parameters()) == {"c"}


def test_initializer_names_that_are_not_identifiers():
    names = ["w.0", "w_0", "training", "forward", ""]
    nodes = [helper.make_node("Add", ["x", "w.0"], ["a"])]
    nodes += [helper.make_node("Mul", ["a", "w_0"], ["b"])]
    nodes += [helper.make_node("Sub", ["b", "training"], ["c"])]
    nodes += [helper.make_node("Add", ["c", "forward"], ["y"])]
    inits = [numpy_helper.from_array(_x(3), n) for n in names[:4]]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_empty_tensor_value_info("y")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])

    error = _max_error(model, {"x": _x(2, 3)})

    assert error < ATOL
    assert set(OnnxModule(model).onnx_parameters()) == set(names[:4])


# ------------------------------------------------------------------ refusals


def _model_with(*node_specs: tuple[str, str]) -> onnx.ModelProto:
    nodes = [
        helper.make_node(op, ["x"], [f"y{i}"], domain=domain)
        for i, (domain, op) in enumerate(node_specs)
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_empty_tensor_value_info(f"y{i}") for i in range(len(nodes))],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_unsupported_ops_are_named_at_construction():
    model = _model_with(
        ("", "Relu"), ("", "RoiAlign"), ("com.microsoft", "FusedGemm"), ("", "NonZero")
    )

    with pytest.raises(JobFailure) as caught:
        OnnxModule(model)

    assert caught.value.code == "unsupported_op"
    for name in ("RoiAlign", "com.microsoft.FusedGemm", "NonZero"):
        assert name in caught.value.detail
    assert "Relu" not in caught.value.detail


def test_training_mode_batchnorm_is_refused():
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1
    )
    inits = [numpy_helper.from_array(np.ones(3, np.float32), n) for n in "sbmv"]
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_empty_tensor_value_info("y")], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])

    with pytest.raises(JobFailure) as caught:
        OnnxModule(model)

    assert caught.value.code == "unsupported_op"
    assert "training-mode BatchNormalization" in caught.value.detail
