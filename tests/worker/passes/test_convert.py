"""The `convert` pass on tiny real networks: fp16/bf16 weights, float32 I/O, fidelity, fallback.

Tolerance: on seeded random inputs the per-sample cosine similarity between the fp32 model and
the converted one is at least `MIN_COSINE` (measured: >= 0.99999 for fp16 and bf16 on the MLP,
CNN and transformer), and the largest absolute error is below `MAX_ABS_ERROR` (measured: 3.2e-4
for fp16, 3.3e-3 for bf16, whose mantissa has 8 bits).

The overflow model multiplies by a constant 1e5 (beyond fp16's 65504) and scales back by 1e-5:
converted blindly it turns the weight into inf and its output into NaN/inf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError
from support import fixture_feeds

from app.core.errors import JobFailure
from app.passes.convert import ConvertConfig
from worker.passes.base import PassContext, PassResult
from worker.passes.convert import ConvertPass, _cpu_has_fp16
from worker.pipeline.tools import onnx_context

MIN_COSINE = 0.999
MAX_ABS_ERROR = {"fp16": 2e-3, "bf16": 2e-2}
NAMES = ["mlp", "cnn", "transformer"]


def _context(source: Path, work_dir: Path) -> PassContext:
    return onnx_context(source, work_dir, threads=2)


def _convert(source: Path, work_dir: Path, **fields: Any) -> PassResult:
    work_dir.mkdir(parents=True, exist_ok=True)
    config = ConvertConfig(op="convert", **{"precision": "fp16", **fields})
    return ConvertPass().run(_context(source, work_dir), config)


def _feeds(name: str) -> dict[str, np.ndarray]:
    if name == "overflow":
        return {"x": np.random.default_rng(7).standard_normal((16, 8), dtype=np.float32)}
    return fixture_feeds(name)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return _session(path).run(None, feeds)[0]


def _min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    cosine = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    return float(cosine.min())


def _weight_types(path: Path) -> dict[str, int]:
    """Element type of the weight (input 1) of every Conv/Gemm/MatMul reading an initializer,
    looked through the Cast that bf16 puts behind its weights."""
    graph = onnx.load(str(path)).graph
    inits = {i.name: i.data_type for i in graph.initializer}
    casts = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast"}
    types = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            weight = casts.get(node.input[1], node.input[1])
            if weight in inits:
                types[node.name] = inits[weight]
    return types


def _overflow_model(path: Path, up: float = 1e5, down: float = 1e-5, readers: int = 1) -> Path:
    """x @ w0 @ (up * I) @ (down * I): the middle product leaves fp16's range. With two
    `readers`, two MatMuls scale it down and an Add sums them."""
    rng = np.random.default_rng(0)
    weights = {
        "w0": rng.standard_normal((8, 8)).astype(np.float32),
        "up": np.eye(8, dtype=np.float32) * np.float32(up),
        "down": np.eye(8, dtype=np.float32) * np.float32(down),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="pre"),
        helper.make_node("MatMul", ["a", "up"], ["big"], name="scale_up"),
        helper.make_node("MatMul", ["big", "down"], ["y"], name="scale_down"),
    ]
    if readers == 2:
        nodes[-1].output[0] = "y1"
        nodes += [
            helper.make_node("MatMul", ["big", "down"], ["y2"], name="scale_down_2"),
            helper.make_node("Add", ["y1", "y2"], ["y"], name="sum"),
        ]
    graph = helper.make_graph(
        nodes,
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _shared_weight_model(path: Path) -> Path:
    """Two MatMuls reading one weight: keeping one in fp32 must not break the other."""
    weight = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="first"),
        helper.make_node("MatMul", ["a", "w"], ["y"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def models(mlp_onnx: Path, transformer_onnx: Path, cnn_onnx: Path) -> dict[str, Path]:
    return {"mlp": mlp_onnx, "transformer": transformer_onnx, "cnn": cnn_onnx}


@pytest.fixture(scope="module")
def converted(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], PassResult]:
    """Each fixture network converted with the defaults, in fp16 and in bf16."""
    return {
        (name, precision): _convert(
            path, tmp_path_factory.mktemp(f"{precision}-{name}"), precision=precision
        )
        for name, path in models.items()
        for precision in ("fp16", "bf16")
    }


@pytest.mark.parametrize("name", NAMES)
def test_fp16_stores_every_weight_as_fp16(
    converted: dict[tuple[str, str], PassResult], name: str
) -> None:
    result = converted[(name, "fp16")]

    types = _weight_types(result.output_path)

    assert types
    assert set(types.values()) == {TensorProto.FLOAT16}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_keep_io_types_keeps_float32_inputs_and_outputs(
    converted: dict[tuple[str, str], PassResult], name: str
) -> None:
    session = _session(converted[(name, "fp16")].output_path)

    types = {value.type for value in [*session.get_inputs(), *session.get_outputs()]}

    assert types == {"tensor(float)"}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_stay_within_tolerance(
    models: dict[str, Path],
    converted: dict[tuple[str, str], PassResult],
    name: str,
    precision: str,
) -> None:
    feeds = _feeds(name)

    reference = _outputs(models[name], feeds)
    candidate = _outputs(converted[(name, precision)].output_path, feeds)

    assert candidate.dtype == np.float32
    assert _min_cosine(reference, candidate) > MIN_COSINE
    assert np.abs(reference - candidate).max() < MAX_ABS_ERROR[precision]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_metrics_report_the_conversion(
    models: dict[str, Path],
    converted: dict[tuple[str, str], PassResult],
    name: str,
    precision: str,
) -> None:
    result = converted[(name, precision)]

    metrics = result.metrics

    assert metrics["precision"] == precision
    assert metrics["nodes_converted"] > 0
    assert metrics["nodes_kept_fp32"] == len(metrics["kept_fp32_nodes"]) == 0
    assert metrics["size_bytes_before"] == models[name].stat().st_size
    assert metrics["size_bytes_after"] == result.output_path.stat().st_size
    assert 0 < metrics["max_abs_error"] < MAX_ABS_ERROR[precision]


def test_fp16_shrinks_the_transformer_file(
    models: dict[str, Path], converted: dict[tuple[str, str], PassResult]
) -> None:
    before = models["transformer"].stat().st_size

    after = converted[("transformer", "fp16")].output_path.stat().st_size

    assert after < 0.7 * before


@pytest.mark.skipif(_cpu_has_fp16(), reason="this CPU has fp16 arithmetic")
def test_fp16_warns_that_it_is_not_faster_on_this_cpu(
    converted: dict[tuple[str, str], PassResult],
) -> None:
    result = converted[("mlp", "fp16")]

    warnings = " ".join(result.warnings)

    assert "On CPUs without fp16 arithmetic" in warnings
    assert "not expected to be faster" in warnings


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_output_is_one_checked_self_contained_file(
    converted: dict[tuple[str, str], PassResult], precision: str
) -> None:
    result = converted[("transformer", precision)]

    model = onnx.load(str(result.output_path), load_external_data=False)

    external = [i for i in model.graph.initializer if i.data_location == TensorProto.EXTERNAL]
    assert external == []
    assert [p.name for p in result.output_path.parent.iterdir()] == [result.output_path.name]
    onnx.checker.check_model(str(result.output_path))


def test_keep_io_types_false_takes_and_returns_fp16(
    models: dict[str, Path], tmp_path: Path
) -> None:
    feeds = {k: v.astype(np.float16) for k, v in _feeds("mlp").items()}

    result = _convert(models["mlp"], tmp_path, keep_io_types=False)

    session = _session(result.output_path)
    assert {v.type for v in [*session.get_inputs(), *session.get_outputs()]} == {"tensor(float16)"}
    assert session.run(None, feeds)[0].dtype == np.float16


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_node_block_list_keeps_the_named_node_fp32(
    models: dict[str, Path], tmp_path: Path, name: str
) -> None:
    node = next(n for n in _weight_types(models[name]))

    result = _convert(models[name], tmp_path, node_block_list=[node])

    assert _weight_types(result.output_path)[node] == TensorProto.FLOAT
    workaround = result.metrics["crash_workaround_nodes"]  # see the ONNX Runtime crash test
    assert sorted(result.metrics["kept_fp32_nodes"]) == sorted([node, *workaround])
    feeds = _feeds(name)
    reference = _outputs(models[name], feeds)
    assert _min_cosine(reference, _outputs(result.output_path, feeds)) > MIN_COSINE


def test_weight_shared_by_kept_and_converted_nodes_still_runs(tmp_path: Path) -> None:
    source = _shared_weight_model(tmp_path / "shared.onnx")
    feeds = {"x": _feeds("overflow")["x"]}

    result = _convert(source, tmp_path / "out", node_block_list=["first"])

    types = _weight_types(result.output_path)
    assert types == {"first": TensorProto.FLOAT, "second": TensorProto.FLOAT16}
    assert _min_cosine(_outputs(source, feeds), _outputs(result.output_path, feeds)) > MIN_COSINE


def test_transformer_with_adds_kept_fp32_loads_and_stays_close(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """Regression: this graph made ONNX Runtime 1.32 segfault at session creation."""
    feeds = _feeds("transformer")

    result = _convert(models["transformer"], tmp_path, op_block_list=["Add"])

    reference = _outputs(models["transformer"], feeds)
    assert _min_cosine(reference, _outputs(result.output_path, feeds)) > MIN_COSINE
    assert result.metrics["nodes_kept_fp32"] > 0


def test_crash_workaround_is_reported_when_used(models: dict[str, Path], tmp_path: Path) -> None:
    result = _convert(models["transformer"], tmp_path, op_block_list=["Add"])

    warned = any("SIGSEGV" in w for w in result.warnings)

    workaround = result.metrics["crash_workaround_nodes"]
    assert warned == bool(workaround)
    assert set(workaround) <= set(result.metrics["kept_fp32_nodes"])


def test_fallback_keeps_the_overflowing_nodes_fp32(tmp_path: Path) -> None:
    source = _overflow_model(tmp_path / "overflow.onnx")

    result = _convert(source, tmp_path / "out")

    assert sorted(result.metrics["fallback_nodes"]) == ["scale_down", "scale_up"]
    assert sorted(result.metrics["kept_fp32_nodes"]) == ["scale_down", "scale_up"]
    types = _weight_types(result.output_path)
    assert types == {
        "pre": TensorProto.FLOAT16,
        "scale_up": TensorProto.FLOAT,
        "scale_down": TensorProto.FLOAT,
    }


def test_fallback_output_stays_finite_float32_and_close(tmp_path: Path) -> None:
    source = _overflow_model(tmp_path / "overflow.onnx")
    feeds = _feeds("overflow")

    result = _convert(source, tmp_path / "out")

    reference, candidate = _outputs(source, feeds), _outputs(result.output_path, feeds)
    assert candidate.dtype == np.float32
    assert np.isfinite(candidate).all()
    assert _min_cosine(reference, candidate) > MIN_COSINE


def test_fallback_holds_when_the_overflowing_tensor_has_two_readers(tmp_path: Path) -> None:
    source = _overflow_model(tmp_path / "overflow.onnx", readers=2)
    feeds = _feeds("overflow")

    result = _convert(source, tmp_path / "out")

    candidate = _outputs(result.output_path, feeds)
    assert np.isfinite(candidate).all()
    assert _min_cosine(_outputs(source, feeds), candidate) > MIN_COSINE
    assert {"scale_up", "scale_down", "scale_down_2"} <= set(result.metrics["fallback_nodes"])


def test_overflow_without_fallback_is_refused(tmp_path: Path) -> None:
    source = _overflow_model(tmp_path / "overflow.onnx")
    work = tmp_path / "out"

    with pytest.raises(JobFailure) as refused:
        _convert(source, work, auto_fallback=False)

    assert refused.value.code == "conversion_not_finite"
    assert "'y'" in refused.value.detail
    assert list(work.iterdir()) == []


def test_fp16_output_beyond_fp16_range_is_refused_despite_fallback(tmp_path: Path) -> None:
    source = _overflow_model(tmp_path / "big.onnx", up=1e4, down=10.0)

    with pytest.raises(JobFailure) as refused:
        _convert(source, tmp_path / "out", keep_io_types=False)

    assert refused.value.code == "conversion_not_finite"


def test_bf16_stores_weights_as_bf16_behind_casts(
    converted: dict[tuple[str, str], PassResult],
) -> None:
    result = converted[("transformer", "bf16")]

    types = _weight_types(result.output_path)

    assert types
    assert set(types.values()) == {TensorProto.BFLOAT16}


def test_bf16_warns_that_arithmetic_stays_fp32(
    converted: dict[tuple[str, str], PassResult],
) -> None:
    result = converted[("mlp", "bf16")]

    warnings = " ".join(result.warnings)

    assert result.metrics["arithmetic"] == "fp32"
    assert "bf16 storage" in warnings


@pytest.mark.parametrize(
    "fields",
    [{}, {"precision": "int8"}, {"precision": "fp16", "unknown": 1}],
    ids=["no-precision", "bad-precision", "unknown-field"],
)
def test_config_refuses_invalid_steps(fields: dict[str, Any]) -> None:
    step = {"op": "convert", **fields}

    with pytest.raises(ValidationError):
        ConvertConfig.model_validate(step)
