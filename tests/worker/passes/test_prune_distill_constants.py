"""`prune` (channel) then `distill` on a mobile detector whose weights are all `Constant` nodes, as
paddle2onnx writes the PP-OCR models (tests/paddle_style.py): the pruned model counts its
parameters (it reported 0 before), and distillation trains every weight, those left in Constant
nodes by the pruning included (they were frozen buffers), and brings the output maps back
toward the teacher's on unseen inputs (`support.assert_closer_to_teacher`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from paddle_style import export_detector
from support import assert_closer_to_teacher

from app.passes.distill import DistillConfig
from app.passes.prune_channel import PruneChannelConfig
from worker.channels.rewrite import parameter_count
from worker.passes.base import PassResult
from worker.passes.distill import DistillPass
from worker.passes.prune_channel import PruneChannelPass
from worker.pipeline.tools import onnx_context


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The teacher, its pruned copy and the distilled one (each pass run once)."""
    root = tmp_path_factory.mktemp("paddle-prune-distill")
    teacher, _ = export_detector(root / "teacher.onnx")
    data = root / "data.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(192, 3, 32, 32)).astype(np.float32))
    for name in ("prune", "distill"):
        (root / name).mkdir()

    def ctx(path: Path, work: Path) -> Any:
        sets = {"d": data}
        return onnx_context(
            path, work, datasets=sets, original_path=teacher, original_format="onnx"
        )

    config = PruneChannelConfig(op="prune", method="channel", ratio=0.5)
    pruned = PruneChannelPass().run(ctx(teacher, root / "prune"), config)
    settings = DistillConfig(op="distill", dataset_id="d", epochs=6, lr=3e-3, batch_size=32)
    distilled = DistillPass().run(ctx(pruned.output_path, root / "distill"), settings)
    return {"teacher": teacher, "pruned": pruned, "distilled": distilled}


def _conv_weights(path: Path) -> dict[str, np.ndarray]:
    """Every Conv / ConvTranspose weight and bias by name, initializer or Constant node."""
    model = onnx.load(str(path))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    names = [
        name for node in model.graph.node if node.op_type in ("Conv", "ConvTranspose")
        for name in node.input[1:]
    ]  # fmt: skip
    return {name: values[name] for name in names}


def _constant_outputs(path: Path) -> set[str]:
    return {n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Constant"}


def test_pruning_counts_constant_weights(steps: dict[str, Any]) -> None:
    metrics = steps["pruned"].metrics

    assert metrics["parameters_before"] == parameter_count(onnx.load(str(steps["teacher"])))
    assert 0 < metrics["parameters_after"] < metrics["parameters_before"]
    assert metrics["groups_pruned"] >= 2
    assert metrics["max_abs_error_vs_masked_reference"] < 1e-4


def test_distillation_trains_the_weights_left_in_constant_nodes(steps: dict[str, Any]) -> None:
    pruned: PassResult = steps["pruned"]
    before = _conv_weights(pruned.output_path)
    after = _conv_weights(steps["distilled"].output_path)
    still_constant = set(before) & _constant_outputs(pruned.output_path)

    changed = {n for n in before if not np.array_equal(before[n], after[n])}

    assert still_constant  # e.g. the head's bias: its output channel is not pruned
    assert changed == set(before)


def test_distillation_recovers_the_output_maps(steps: dict[str, Any]) -> None:
    metrics = steps["distilled"].metrics
    unseen = np.random.default_rng(1).normal(size=(32, 3, 40, 24)).astype(np.float32)

    assert metrics["agreement_metric"] == "cosine"
    assert metrics["before"]["agreement"] < 0.5  # pruning collapsed the maps...
    assert metrics["after"]["agreement"] > 0.9  # ...and distillation brought them back
    assert_closer_to_teacher(steps["pruned"].output_path, steps["distilled"].output_path,
                             steps["teacher"], unseen)  # fmt: skip
