"""The `quantize` pass on tiny real networks: int8 graphs, fidelity, defaults, metrics.

Tolerance: on seeded random inputs, the per-sample cosine similarity between the original and
the dynamically quantized model's outputs is at least `MIN_COSINE` for the MLP and the
transformer (measured here: >= 0.999 with per-channel weights).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from support import first_output, fixture_feeds

from app.passes.quantize import QuantizeConfig
from worker.passes.base import PassContext, PassResult
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context

MIN_COSINE = 0.99
INT8_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


def _context(source: Path, work_dir: Path) -> PassContext:
    return onnx_context(source, work_dir, threads=1)


def _quantize(source: Path, work_dir: Path, **fields: Any) -> PassResult:
    work_dir.mkdir(parents=True, exist_ok=True)
    return QuantizePass().run(_context(source, work_dir), QuantizeConfig(op="quantize", **fields))


def _op_types(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    cosine = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    return float(cosine.min())


def _quantized_in_graph(path: Path) -> int:
    """Nodes that compute on int8 weights: integer matmuls/convs and lookups in int8 tables."""
    graph = onnx.load(str(path)).graph
    int8 = {i.name for i in graph.initializer if i.data_type in INT8_TYPES}
    integer = [n for n in graph.node if n.op_type in ("MatMulInteger", "ConvInteger")]
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in int8]
    return len(integer) + len(lookups)


def _weight_node(path: Path, op_type: str) -> onnx.NodeProto:
    """The last node of `op_type` whose second input is a weight (an initializer)."""
    graph = onnx.load(str(path)).graph
    weights = {init.name for init in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == op_type and n.input[1] in weights]
    return nodes[-1]


@pytest.fixture(scope="module")
def models(mlp_onnx: Path, transformer_onnx: Path, cnn_onnx: Path) -> dict[str, Path]:
    return {"mlp": mlp_onnx, "transformer": transformer_onnx, "cnn": cnn_onnx}


@pytest.fixture(scope="module")
def defaults(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, PassResult]:
    """Each fixture network quantized with the default config."""
    return {
        name: _quantize(path, tmp_path_factory.mktemp(f"quantized-{name}"))
        for name, path in models.items()
    }


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_default_rewrites_matmuls_as_integer_ops(
    defaults: dict[str, PassResult], name: str
) -> None:
    result = defaults[name]

    ops = _op_types(result.output_path)

    assert ops["MatMulInteger"] > 0
    assert ops["DynamicQuantizeLinear"] > 0


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_default_stores_int8_weights(defaults: dict[str, PassResult], name: str) -> None:
    graph = onnx.load(str(defaults[name].output_path)).graph

    int8 = [init.name for init in graph.initializer if init.data_type == onnx.TensorProto.INT8]

    assert any(n.endswith("_quantized") for n in int8)


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_outputs_stay_within_tolerance(
    models: dict[str, Path], defaults: dict[str, PassResult], name: str
) -> None:
    feeds = fixture_feeds(name)

    reference = first_output(models[name], feeds)
    candidate = first_output(defaults[name].output_path, feeds)

    assert candidate.shape == reference.shape
    assert _min_cosine(reference, candidate) >= MIN_COSINE


def test_default_never_produces_conv_integer_on_a_cnn(
    models: dict[str, Path], defaults: dict[str, PassResult]
) -> None:
    before = _op_types(models["cnn"])

    after = _op_types(defaults["cnn"].output_path)

    assert "ConvInteger" not in after
    assert after["Conv"] == before["Conv"] == 2


def test_default_metrics_report_convs_as_not_quantized(
    models: dict[str, Path], defaults: dict[str, PassResult]
) -> None:
    convs = {n.name for n in onnx.load(str(models["cnn"])).graph.node if n.op_type == "Conv"}

    metrics = defaults["cnn"].metrics

    assert convs.isdisjoint(metrics["quantized_nodes"])
    assert metrics["op_types_after"]["Conv"] == len(convs)
    assert "ConvInteger" not in metrics["op_types_after"]


def test_conv_op_type_warns_about_conv_integer(models: dict[str, Path], tmp_path: Path) -> None:
    result = _quantize(models["cnn"], tmp_path, op_types=["Conv"])

    warnings = " ".join(result.warnings)

    assert "ConvInteger" in warnings
    assert _op_types(result.output_path)["ConvInteger"] == 2


@pytest.mark.parametrize(("name", "op_type"), [("mlp", "Gemm"), ("transformer", "MatMul")])
def test_excluded_node_keeps_float_weights_in_the_graph(
    models: dict[str, Path], tmp_path: Path, name: str, op_type: str
) -> None:
    node = _weight_node(models[name], op_type)
    weight = node.input[1]

    result = _quantize(models[name], tmp_path, exclude_nodes=[node.name])

    graph = onnx.load(str(result.output_path)).graph
    int_weights = [i.name for i in graph.initializer if i.data_type in INT8_TYPES]
    assert not [n for n in int_weights if n.startswith(weight)], f"{node.name} was quantized"
    float_readers = [
        n for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1].startswith(weight)
    ]
    assert float_readers


@pytest.mark.parametrize(("name", "op_type"), [("mlp", "Gemm"), ("transformer", "MatMul")])
def test_excluded_node_is_reported_float(
    models: dict[str, Path], tmp_path: Path, name: str, op_type: str
) -> None:
    node = _weight_node(models[name], op_type)

    result = _quantize(models[name], tmp_path, exclude_nodes=[node.name])

    assert node.name in result.metrics["float_nodes"]
    assert node.name not in result.metrics["quantized_nodes"]
    assert result.metrics["excluded_nodes"] == [node.name]


@pytest.mark.parametrize("per_channel", [True, False])
def test_per_channel_choice_runs_and_shapes_the_scales(
    models: dict[str, Path], tmp_path: Path, per_channel: bool
) -> None:
    feeds = fixture_feeds("mlp")

    result = _quantize(models["mlp"], tmp_path, per_channel=per_channel)

    graph = onnx.load(str(result.output_path)).graph
    scales = [i for i in graph.initializer if i.name.endswith("weight_Transposed_scale")]
    sizes = {int(np.prod(i.dims)) for i in scales}
    assert scales
    assert (min(sizes) > 1) if per_channel else (sizes == {1})
    reference = first_output(models["mlp"], feeds)
    assert _min_cosine(reference, first_output(result.output_path, feeds)) >= MIN_COSINE


@pytest.mark.parametrize("name", ["mlp", "transformer", "cnn"])
def test_nodes_quantized_metric_counts_the_integer_nodes(
    defaults: dict[str, PassResult], name: str
) -> None:
    result = defaults[name]

    in_graph = _quantized_in_graph(result.output_path)

    assert result.metrics["nodes_quantized"] == in_graph
    assert len(result.metrics["quantized_nodes"]) == result.metrics["nodes_quantized"]


@pytest.mark.parametrize("name", ["mlp", "transformer", "cnn"])
def test_output_is_one_self_contained_file(defaults: dict[str, PassResult], name: str) -> None:
    result = defaults[name]

    model = onnx.load(str(result.output_path), load_external_data=False)

    external = [
        i.name for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL
    ]
    assert external == []
    assert [p.name for p in result.output_path.parent.iterdir()] == [result.output_path.name]
    onnx.checker.check_model(str(result.output_path))
