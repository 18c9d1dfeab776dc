"""The `optimize` pass: ONNX Runtime offline graph optimization keeps the model's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from networks import EagerBertBlock

from app.passes.optimize import OptimizeConfig
from worker.ort import load_checked
from worker.passes.base import PassResult
from worker.passes.optimize import LEVEL_WARNING, OptimizePass
from worker.pipeline.tools import onnx_context

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
            ctx = onnx_context(path, work, threads=1)
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


def test_transformer_fusions_fuse_attention_and_keep_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "bert.onnx"
    torch.onnx.export(
        EagerBertBlock().eval(),
        (torch.randint(0, 1000, (2, 8)),),
        str(path),
        dynamo=False,
        input_names=["input_ids"],
        dynamic_axes={"input_ids": {0: "b", 1: "s"}},
        opset_version=17,
    )
    work = tmp_path / "work"
    work.mkdir()
    ctx = onnx_context(path, work, vocab={"input_ids": 1000}, shapes={"input_ids": [1, 8]})

    result = OptimizePass().run(
        ctx, OptimizeConfig(op="optimize", transformer_fusions=True, num_heads=4, hidden_size=64)
    )

    assert result.metrics["fused_operators"].get("Attention") == 1
    assert result.metrics["nodes_after"] < result.metrics["nodes_before"] // 2
    assert max(result.metrics["validation"]["max_abs_error"].values()) < 1e-4
    ids = np.random.default_rng(0).integers(0, 1000, (3, 11), dtype=np.int64)
    original = ort.InferenceSession(str(path)).run(None, {"input_ids": ids})[0]
    fused = ort.InferenceSession(str(result.output_path)).run(None, {"input_ids": ids})[0]
    np.testing.assert_allclose(fused, original, atol=1e-4)


def test_transformer_fusions_say_when_nothing_matched(mlp_onnx: Path, tmp_path: Path) -> None:
    ctx = onnx_context(mlp_onnx, tmp_path)

    result = OptimizePass().run(ctx, OptimizeConfig(op="optimize", transformer_fusions=True))

    assert any("fused nothing" in w for w in result.warnings)
