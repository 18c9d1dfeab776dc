"""The `optimize` pass: ONNX Runtime offline graph optimization keeps the model's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.passes.base import PassContext, PassResult
from app.passes.optimize import LEVEL_WARNING, OptimizeConfig, OptimizePass
from worker.inputs import onnx_input_specs
from worker.onnx_utils import load_checked
from worker.tools import WorkerTools

MAX_ABS_ERROR = 1e-4
NAMES = ["mlp", "cnn", "transformer"]
LEVELS = ["basic", "extended"]


def _feeds(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    if name == "mlp":
        return {"input": rng.standard_normal((16, 32), dtype=np.float32)}
    if name == "cnn":
        return {"x": rng.standard_normal((4, 3, 16, 16), dtype=np.float32)}
    return {"input_ids": rng.integers(0, 1000, (4, 20), dtype=np.int64)}


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.fixture(scope="module")
def models(mlp_onnx: Path, cnn_onnx: Path, transformer_onnx: Path) -> dict[str, Path]:
    return {"mlp": mlp_onnx, "cnn": cnn_onnx, "transformer": transformer_onnx}


@pytest.fixture(scope="module")
def optimized(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], PassResult]:
    """Every fixture network optimized at every level."""
    results = {}
    for name, path in models.items():
        for level in LEVELS:
            work = tmp_path_factory.mktemp(f"optimized-{name}-{level}")
            specs = onnx_input_specs(path)
            ctx = PassContext(
                input_path=path,
                input_format="onnx",
                work_dir=work,
                step_index=0,
                threads=1,
                tools=WorkerTools(specs, {}, None, 1),
                inputs=specs,
            )
            results[name, level] = OptimizePass().run(
                ctx, OptimizeConfig(op="optimize", level=level)
            )
    return results


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", NAMES)
def test_output_matches_the_input_model(
    models: dict[str, Path],
    optimized: dict[tuple[str, str], PassResult],
    name: str,
    level: str,
) -> None:
    feeds = _feeds(name)

    reference = _outputs(models[name], feeds)
    candidate = _outputs(optimized[name, level].output_path, feeds)

    assert len(candidate) == len(reference)
    for ref, cand in zip(reference, candidate, strict=True):
        assert cand.shape == ref.shape
        assert float(np.abs(ref - cand).max()) < MAX_ABS_ERROR


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", NAMES)
def test_metrics_describe_the_output_graph(
    models: dict[str, Path],
    optimized: dict[tuple[str, str], PassResult],
    name: str,
    level: str,
) -> None:
    result = optimized[name, level]

    before = onnx.load(str(models[name])).graph.node
    after = onnx.load(str(result.output_path)).graph.node

    assert result.output_format == "onnx"
    assert result.metrics["level"] == level
    assert result.metrics["nodes_before"] == len(before)
    assert result.metrics["nodes_after"] == len(after)
    assert sum(result.metrics["op_types_after"].values()) == len(after)


@pytest.mark.parametrize("name", NAMES)
def test_extended_level_carries_the_contrib_ops_warning(
    optimized: dict[tuple[str, str], PassResult], name: str
) -> None:
    result = optimized[name, "extended"]

    warnings = result.warnings

    assert warnings == [LEVEL_WARNING]


@pytest.mark.parametrize("name", NAMES)
def test_basic_level_stays_portable_onnx_without_warning(
    optimized: dict[tuple[str, str], PassResult], name: str
) -> None:
    result = optimized[name, "basic"]

    domains = {node.domain for node in onnx.load(str(result.output_path)).graph.node}

    assert domains <= {"", "ai.onnx"}
    assert result.warnings == []
    onnx.checker.check_model(str(result.output_path))


@pytest.mark.parametrize("level", LEVELS)
def test_output_passes_the_sandbox_model_checks(
    optimized: dict[tuple[str, str], PassResult], level: str
) -> None:
    """The next step and the measurement open the output with the worker's checked loader."""
    result = optimized["mlp", level]

    model = load_checked(result.output_path)

    assert len(model.graph.node) == result.metrics["nodes_after"]
