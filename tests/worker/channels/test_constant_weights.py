"""Channel analysis and rewrite on a graph whose weights are all `Constant` nodes (paddle2onnx, e.g.
the PP-OCR models; tests/paddle_style.py builds one): the groups are found through depthwise
convs, the squeeze-excitation gate, the Resize + Add and the ConvTranspose, the pruned graph
equals the masked reference in ONNX Runtime at several heights and widths, and the parameter
count sees the Constant weights (it counted initializers only: 0 for such a model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from paddle_style import export_detector

from worker.channels.analysis import analyze
from worker.channels.rewrite import parameter_count, rewrite
from worker.channels.select import by_ratio, importance


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, int]:
    """(the paddle-style model, the torch module's parameter count)."""
    path, module = export_detector(tmp_path_factory.mktemp("paddle") / "detector.onnx")
    return onnx.load(str(path)), sum(p.numel() for p in module.parameters())


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_parameter_count_sees_constant_weights(detector: tuple[Any, int]) -> None:
    model, torch_count = detector
    floats = [
        n.attribute[0].t for n in model.graph.node
        if n.op_type == "Constant" and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT
    ]  # fmt: skip

    count = parameter_count(model)

    assert count == sum(int(np.prod(t.dims)) for t in floats)
    # the export folds batch-norm into the convs: a few weights fewer than torch has
    assert 0.99 * torch_count < count <= torch_count


def test_every_conv_group_is_prunable_but_the_output_map(detector: tuple[Any, int]) -> None:
    analysis = analyze(detector[0])

    skipped = [g for g in analysis.groups if not g.prunable]

    assert len(analysis.groups) >= 6
    assert len(skipped) == 1 and "graph output" in str(skipped[0].reason)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 64, 96)])
def test_pruned_graph_equals_the_masked_reference(
    detector: tuple[Any, int], shape: tuple[int, ...]
) -> None:
    model = detector[0]
    analysis = analyze(model)
    removed = by_ratio(analysis, importance(analysis, "l1"), 0.5, 1, "layer")
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)

    pruned = rewrite(analysis, removed, "prune")

    onnx.checker.check_model(pruned, full_check=True)
    got, want = _run(pruned, x), _run(rewrite(analysis, removed, "mask"), x)
    assert got.shape == want.shape == (shape[0], 1, shape[2], shape[3])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert 0 < parameter_count(pruned) < 0.6 * parameter_count(model)
