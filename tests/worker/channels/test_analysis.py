"""The channel dependency analysis (app/passes/structure*.py) on real and hand-built graphs.

Exported networks are checked for the groups the analysis must find (residual partners merged,
concatenation branches separate, depthwise convolutions carried through, flatten into linear,
FFN neurons), hand-built graphs for what it must refuse. Every removal is checked the same way:
the pruned graph passes the ONNX checker, runs, and computes what the original computes with
the removed channels zeroed at their consumers (the "masked reference").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from networks import Bert, BranchCnn, Encoder, Glu, export_onnx, randomize_batch_norms
from onnx import TensorProto, helper, numpy_helper

from worker.channels.analysis import analyze
from worker.channels.rewrite import parameter_count, rewrite
from worker.channels.select import keep_every_tensor
from worker.channels.state import Analysis, Group

EXPORTERS = ["dynamo", "dynamo-unoptimized", "torchscript"]


# ---------------------------------------------------------------- networks


@pytest.fixture(scope="module", params=EXPORTERS)
def cnn_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("structure") / f"cnn-{request.param}.onnx"
    module = randomize_batch_norms(BranchCnn(branch=12, hidden=32, block_norm=True))
    return onnx.load(str(export_onnx(module, torch.randn(2, 3, 8, 8), path, request.param)))


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def encoder_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("structure") / f"encoder-{request.param}.onnx"
    ids = torch.randint(0, 100, (2, 12))
    return onnx.load(str(export_onnx(Encoder().eval(), ids, path, request.param)))


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def bert_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("structure") / f"bert-{request.param}.onnx"
    ids = torch.randint(0, 100, (2, 12))
    return onnx.load(str(export_onnx(Bert().eval(), ids, path, request.param)))


# ---------------------------------------------------------------- helpers


def weight_shapes(analysis: Analysis, group: Group) -> list[tuple[int, ...]]:
    """The weight shapes of a group's producers (node names differ between exporters)."""
    nodes = {n.name: n for n in analysis.model.graph.node}
    return sorted(tuple(analysis.constants[nodes[p].input[1]].shape) for p in group.producers)


def group_of(analysis: Analysis, shape: tuple[int, ...]) -> Group:
    (group,) = [g for g in analysis.groups if shape in weight_shapes(analysis, g)]
    return group


def random_removal(analysis: Analysis, seed: int) -> set[int]:
    """About half of every prunable group, at random; every group keeps at least one unit."""
    rng = np.random.default_rng(seed)
    removed: set[int] = set()
    for group in analysis.groups:
        if group.prunable and len(group.units) > 1:
            count = int(rng.integers(1, len(group.units)))
            removed.update(int(u) for u in rng.choice(group.units, count, replace=False))
    return keep_every_tensor(analysis, removed, {})


def feeds_for(model: Any, batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    feeds = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        shape = [d.dim_value or (batch if i == 0 else 7) for i, d in enumerate(tensor.shape.dim)]
        if tensor.elem_type == TensorProto.INT64:
            feeds[value.name] = rng.integers(0, 50, shape).astype(np.int64)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def run(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_consistent(analysis: Analysis, removed: set[int], feeds: dict[str, Any]) -> Any:
    """The pruned graph is valid, runs, keeps output shapes and equals the masked reference."""
    pruned = rewrite(analysis, removed, "prune")
    onnx.checker.check_model(pruned, full_check=True)
    expected = run(rewrite(analysis, removed, "mask"), feeds)
    got = run(pruned, feeds)
    for want, out in zip(expected, got, strict=True):
        assert out.shape == want.shape
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    return pruned


# ---------------------------------------------------------------- exported networks


def test_cnn_groups_merge_residual_partners_and_keep_concat_branches_apart(cnn_model: Any) -> None:
    analysis = analyze(cnn_model)

    found = sorted((weight_shapes(analysis, g), len(g.units), g.prunable) for g in analysis.groups)

    assert found == [
        ([(5, 32)], 5, False),
        ([(8, 16, 1, 1)], 8, True),
        ([(12, 16, 3, 3)], 12, True),
        ([(16, 3, 3, 3), (16, 16, 3, 3)], 16, True),
        ([(16, 20, 1, 1)], 16, True),
        ([(32, 256)], 32, True),
    ]
    assert "graph output" in str(group_of(analysis, (5, 32)).reason)


def test_depthwise_conv_carries_the_concatenated_channels(cnn_model: Any) -> None:
    analysis = analyze(cnn_model)
    a, b = group_of(analysis, (8, 16, 1, 1)), group_of(analysis, (12, 16, 3, 3))

    (group_attr,) = analysis.attrs
    roots = analysis.channels.roots(group_attr.ids)

    assert sorted(roots.tolist()) == sorted([*a.units.tolist(), *b.units.tolist()])


def test_flatten_maps_each_channel_to_a_block_of_linear_inputs(cnn_model: Any) -> None:
    analysis = analyze(cnn_model)
    pw = group_of(analysis, (16, 20, 1, 1))
    fc_weight = next(t.name for t in cnn_model.graph.initializer if tuple(t.dims) == (32, 256))

    (use,) = [
        s
        for s in analysis.slices
        if s.role == "consumer" and analysis.model.graph.node[s.node].input[1] == fc_weight
    ]
    roots = analysis.channels.roots(use.ids)

    assert use.axis == 1
    assert roots.tolist() == np.repeat(pw.units, 16).tolist()


def test_cnn_random_removals_give_valid_equivalent_graphs(cnn_model: Any) -> None:
    analysis = analyze(cnn_model)

    for seed in range(3):
        pruned = assert_consistent(analysis, random_removal(analysis, seed), feeds_for(cnn_model))

        assert parameter_count(pruned) < parameter_count(cnn_model)


def test_transformer_ffn_neurons_and_packed_attention_heads(
    encoder_model: Any, request: pytest.FixtureRequest
) -> None:
    analysis = analyze(encoder_model)

    ffn = [g for g in analysis.groups if weight_shapes(analysis, g) == [(32, 64)]]
    attention = [g for g in analysis.groups if (32, 96) in weight_shapes(analysis, g)]

    assert len(ffn) == 2 and all(g.prunable and len(g.units) == 64 for g in ffn)
    if "dynamo" in request.node.name:
        # nn.MultiheadAttention's packed q/k/v heads, folded into the batch axis: one unit per
        # head (its 8 channels of q, k and v). TransformerEncoder deep-copies its layer, and
        # the exporter shares the identical out_proj weights, so both layers form one group.
        assert [(len(g.units), g.width, g.prunable) for g in attention] == [(4, 24, True)]
        assert [g for g in analysis.groups if g.prunable] == [
            g for g in analysis.groups if g in ffn or g in attention
        ]
    else:  # TorchScript computes the head width at run time (Shape / Div): refused
        assert attention and not any(g.prunable for g in attention)
        assert [g for g in analysis.groups if g.prunable] == ffn


def test_transformer_ffn_removal_is_valid_at_other_lengths(encoder_model: Any) -> None:
    analysis = analyze(encoder_model)
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 100, (3, 12)).astype(np.int64)}

    pruned = assert_consistent(analysis, random_removal(analysis, 1), feeds)

    shapes = sorted(tuple(t.dims) for t in pruned.graph.initializer if len(t.dims) == 2)
    assert (32, 64) not in shapes and (64, 32) not in shapes


def test_attention_heads_form_one_group_per_layer(bert_model: Any) -> None:
    analysis = analyze(bert_model)

    heads = [g for g in analysis.groups if g.prunable]

    assert [(len(g.producers), len(g.units), g.width) for g in heads] == [(3, 4, 8), (3, 4, 8)]
    outputs = [g for g in analysis.groups if not g.prunable]
    assert all("fixed" in str(g.reason) or "output" in str(g.reason) for g in outputs)


def test_attention_head_removal_is_valid_with_different_heads_per_layer(bert_model: Any) -> None:
    analysis = analyze(bert_model)
    one, two = [g for g in analysis.groups if g.prunable]
    removed = {int(one.units[0]), int(two.units[2]), int(two.units[3])}
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 100, (2, 9)).astype(np.int64)}

    pruned = assert_consistent(analysis, removed, feeds)

    widths = [tuple(t.dims) for t in pruned.graph.initializer if len(t.dims) == 2]
    assert widths.count((32, 24)) == 3 and widths.count((32, 16)) == 3  # q, k, v per layer
    assert (24, 32) in widths and (16, 32) in widths  # the output projections


def test_ignored_node_pins_its_group(cnn_model: Any) -> None:
    names = [n.name for n in cnn_model.graph.node if n.op_type in ("Gemm", "MatMul")]

    analysis = analyze(cnn_model, ignore_nodes=names[:1])

    fc = group_of(analysis, (32, 256))
    pw = group_of(analysis, (16, 20, 1, 1))
    assert not fc.prunable and "ignore_nodes" in str(fc.reason)
    assert not pw.prunable  # its channels are the ignored layer's inputs


# ---------------------------------------------------------------- hand-built graphs


def conv_net(middle: list[Any], inits: dict[str, np.ndarray], extra_inputs: dict | None = None):
    """x[1,3,6,6] -> c1 (8 ch) -> relu `r` -> middle (ends in `m`) -> c2 (-> 4 ch) -> y."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((4, 8, 1, 1)).astype(np.float32),
        **inits,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        *middle,
        helper.make_node("Conv", ["m", "w2"], ["y"], name="c2"),
    ]
    inputs = {"x": [1, 3, 6, 6], **(extra_inputs or {})}
    return make_model(nodes, weights, inputs, {"y": ["n", "c", "h", "w"]})


def make_model(nodes: list[Any], inits: dict, inputs: dict, outputs: dict) -> Any:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def c1_group(analysis: Analysis) -> Group:
    (group,) = [g for g in analysis.groups if "c1" in g.producers]
    return group


@pytest.mark.parametrize(
    ("middle", "inits", "why"),
    [
        ([helper.make_node("LRN", ["r"], ["m"], size=3)], {}, "LRN"),
        ([helper.make_node("Softmax", ["r"], ["m"], axis=1)], {}, "channel axis"),
        (
            [
                helper.make_node("Reshape", ["r", "s1"], ["t"]),
                helper.make_node("Reshape", ["t", "s2"], ["m"]),
            ],
            {"s1": np.array([1, 2, 4, 36]), "s2": np.array([1, 8, 6, 6])},
            "splits the channel axis",
        ),
        (
            [helper.make_node("Conv", ["r", "wg"], ["m"], group=2)],
            {"wg": np.ones((8, 4, 1, 1), np.float32)},
            "grouped",
        ),
        ([helper.make_node("Add", ["r", "x8"], ["m"])], {}, "fixed"),
        (
            [
                helper.make_node("Shape", ["r"], ["shape"], start=1, end=2),
                helper.make_node("Identity", ["r"], ["m"]),
            ],
            {},
            "channel count",
        ),
        (
            [helper.make_node("MaxPool", ["r"], ["m", "idx"], kernel_shape=[2, 2])],
            {},
            "indices",
        ),
    ],
    ids=["unknown-op", "softmax-channels", "split-reshape", "grouped", "add-input", "shape", "idx"],
)
def test_what_the_analysis_cannot_follow_pins_the_group(
    middle: list[Any], inits: dict, why: str
) -> None:
    extra = {"x8": [1, 8, 6, 6]}
    model = conv_net(middle, inits, extra)

    group = c1_group(analyze(model))

    assert not group.prunable
    assert why in str(group.reason)


@pytest.mark.parametrize(
    ("middle", "inits"),
    [
        ([helper.make_node("Softmax", ["r"], ["m"], axis=-1)], {}),
        (
            [
                helper.make_node("Shape", ["r"], ["shape"], start=0, end=1),
                helper.make_node("Identity", ["r"], ["m"]),
            ],
            {},
        ),
        (
            [
                helper.make_node("Reshape", ["r", "s1"], ["t"]),
                helper.make_node("Reshape", ["t", "s2"], ["m"]),
            ],
            {"s1": np.array([0, 8, -1]), "s2": np.array([1, -1, 6, 6])},
        ),
        (
            [
                helper.make_node("Mul", ["r", "scale"], ["t"]),
                helper.make_node("Transpose", ["t"], ["u"], perm=[0, 2, 3, 1]),
                helper.make_node("Transpose", ["u"], ["m"], perm=[0, 3, 1, 2]),
            ],
            {"scale": np.linspace(0.5, 1.5, 8, dtype=np.float32).reshape(8, 1, 1)},
        ),
        (
            [
                helper.make_node("Conv", ["r", "wd", "bd"], ["d"], group=8, pads=[1, 1, 1, 1]),
                helper.make_node("Conv", ["d", "wp"], ["m"]),
            ],
            {
                "wd": np.random.default_rng(2).standard_normal((16, 1, 3, 3)).astype(np.float32),
                "bd": np.arange(16, dtype=np.float32),
                "wp": np.random.default_rng(3).standard_normal((8, 16, 1, 1)).astype(np.float32),
            },
        ),
        (
            [helper.make_node("ConvTranspose", ["r", "wt", "bt"], ["m"], strides=[2, 2])],
            {
                "wt": np.random.default_rng(4).standard_normal((8, 8, 2, 2)).astype(np.float32),
                "bt": np.arange(8, dtype=np.float32),
            },
        ),
        (
            [
                helper.make_node("Concat", ["r", "x2"], ["cat"], axis=1),
                helper.make_node("Conv", ["cat", "wc"], ["m"]),
            ],
            {"wc": np.random.default_rng(6).standard_normal((8, 10, 1, 1)).astype(np.float32)},
        ),
    ],
    ids=[
        "softmax-spatial",
        "shape-batch",
        "keep-reshape",
        "scale",
        "depthwise-x2",
        "deconv",
        "cat",
    ],
)
def test_what_the_analysis_follows_prunes_consistently(middle: list[Any], inits: dict) -> None:
    model = conv_net(middle, inits, {"x2": [1, 2, 6, 6]})
    analysis = analyze(model)
    group = c1_group(analysis)
    removed = {int(u) for u in group.units[::2]}

    assert group.prunable
    feeds = feeds_for(model, batch=1)
    pruned = assert_consistent(analysis, keep_every_tensor(analysis, removed, {}), feeds)
    assert parameter_count(pruned) < parameter_count(model)


def test_split_with_sizes_edits_each_part() -> None:
    middle = [
        helper.make_node("Split", ["r", "sizes"], ["p", "q"], axis=1),
        helper.make_node("Sigmoid", ["q"], ["sq"]),
        helper.make_node("Concat", ["sq", "p"], ["m"], axis=1),
    ]
    model = conv_net(middle, {"sizes": np.array([3, 5])})
    analysis = analyze(model)
    group = c1_group(analysis)
    removed = {int(group.units[i]) for i in (0, 1, 4, 6)}  # 2 of the first part, 2 of the second

    pruned = assert_consistent(analysis, removed, feeds_for(model, batch=1))

    sizes = next(t for t in pruned.graph.initializer if t.name.startswith("sizes"))
    assert numpy_helper.to_array(sizes).tolist() == [1, 3]


def test_equal_split_halves_go_together_as_in_a_glu(tmp_path: Path) -> None:
    path = export_onnx(Glu().eval(), torch.randn(2, 16), tmp_path / "glu.onnx")
    analysis = analyze(onnx.load(str(path)))
    (group,) = [g for g in analysis.groups if g.prunable]

    assert (len(group.units), group.width) == (32, 2)
    pruned = assert_consistent(analysis, random_removal(analysis, 0), feeds_for(analysis.model))
    assert parameter_count(pruned) < parameter_count(analysis.model)


def test_concat_then_add_with_fixed_channels_pins_both_producers() -> None:
    rng = np.random.default_rng(0)
    middle = [
        helper.make_node("Concat", ["r", "x2"], ["cat"], axis=1),
        helper.make_node("Conv", ["x", "w3"], ["c3"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["cat", "c3"], ["sum"]),
        helper.make_node("Conv", ["sum", "wc"], ["m"]),
    ]
    inits = {
        "w3": rng.standard_normal((10, 3, 3, 3)).astype(np.float32),
        "wc": rng.standard_normal((8, 10, 1, 1)).astype(np.float32),
    }

    analysis = analyze(conv_net(middle, inits, {"x2": [1, 2, 6, 6]}))

    group = c1_group(analysis)
    assert set(group.producers) == {"c1", "c3"}
    assert not group.prunable and "fixed channels" in str(group.reason)


def test_layer_norm_over_the_features_pins_them() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "w2"], ["y"], name="fc2"),
    ]
    inits = {
        "w1": rng.standard_normal((16, 32)).astype(np.float32),
        "g": np.ones(32, np.float32),
        "b": np.zeros(32, np.float32),
        "w2": rng.standard_normal((32, 4)).astype(np.float32),
    }

    analysis = analyze(make_model(nodes, inits, {"x": [2, 16]}, {"y": ["n", "k"]}))

    (group,) = [g for g in analysis.groups if g.producers == ["fc1"]]
    assert "normalizes over the channel axis" in str(group.reason)


def test_gemm_without_transposed_weight_and_shared_bias_split_per_reader() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "bias"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "bias"], ["h2"], name="fc2", transB=1),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Gemm", ["r2", "w3"], ["y"], name="fc3"),
    ]
    inits = {
        "w1": rng.standard_normal((16, 32)).astype(np.float32),  # [K, N]
        "bias": rng.standard_normal(32).astype(np.float32),  # read by fc1 and fc2
        "w2": rng.standard_normal((32, 32)).astype(np.float32),  # [N, K]
        "w3": rng.standard_normal((32, 4)).astype(np.float32),
    }
    model = make_model(nodes, inits, {"x": [2, 16]}, {"y": ["n", "k"]})
    analysis = analyze(model)
    fc1 = next(g for g in analysis.groups if g.producers == ["fc1"])
    fc2 = next(g for g in analysis.groups if g.producers == ["fc2"])
    removed = {int(u) for u in fc1.units[:8]} | {int(u) for u in fc2.units[-4:]}

    pruned = assert_consistent(analysis, removed, feeds_for(model))

    biases = sorted(tuple(t.dims) for t in pruned.graph.initializer if len(t.dims) == 1)
    assert biases == [(24,), (28,)]
