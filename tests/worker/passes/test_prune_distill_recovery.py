"""Channel pruning collapses accuracy (docs/field-notes.md); distillation brings it back within a
documented budget: on digits, 50% of the channels removed then distilled stays within 3 points.

What each step did is measured on the files (`support.assert_fewer_parameters`,
`support.assert_accuracy_gain`), which test_noop_guard.py proves fail on a pass that does nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from networks import DigitsCnn, train_classifier
from sklearn.datasets import load_digits
from support import accuracy, assert_accuracy_gain, assert_fewer_parameters

from app.passes.distill import DistillConfig
from app.passes.prune_channel import PruneChannelConfig
from worker.passes.base import PassContext
from worker.passes.distill import DistillPass
from worker.passes.prune_channel import PruneChannelPass
from worker.pipeline.tools import onnx_context

BUDGET = 0.03


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    torch.manual_seed(0)
    model = train_classifier(DigitsCnn(hidden=None), x[:1300], y[:1300], epochs=8, lr=2e-3)
    work = tmp_path_factory.mktemp("digits")
    path = work / "cnn.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(x[:2]),),
        str(path),
        dynamo=True,
        external_data=False,
        dynamic_shapes={"x": {0: torch.export.Dim("batch", max=4096)}},
    )
    np.savez(work / "train.npz", x=x[:1300], labels=y[:1300])
    return {"path": path, "npz": work / "train.npz", "test": (x[1300:], y[1300:])}


def _ctx(path: Path, work: Path, trained: dict) -> PassContext:
    return onnx_context(
        path,
        work,
        datasets={"train": trained["npz"]},
        original_path=trained["path"],
        original_format="onnx",
    )


def test_channel_pruning_then_distillation_recovers_accuracy(trained: dict, tmp_path: Path) -> None:
    baseline = accuracy(trained["path"], *trained["test"])
    (tmp_path / "p").mkdir()
    (tmp_path / "d").mkdir()

    pruned = PruneChannelPass().run(
        _ctx(trained["path"], tmp_path / "p", trained),
        PruneChannelConfig(op="prune", method="channel", ratio=0.5),
    )
    distilled = DistillPass().run(
        _ctx(pruned.output_path, tmp_path / "d", trained),
        DistillConfig(op="distill", dataset_id="train", epochs=10),
    )

    after_pruning = accuracy(pruned.output_path, *trained["test"])
    recovered = accuracy(distilled.output_path, *trained["test"])
    assert baseline > 0.9
    assert_fewer_parameters(trained["path"], pruned.output_path, at_most=0.5)
    assert pruned.metrics["parameters_after"] < 0.5 * pruned.metrics["parameters_before"]
    assert recovered >= baseline - BUDGET, (baseline, after_pruning, recovered)
    assert_accuracy_gain(pruned.output_path, distilled.output_path, *trained["test"], margin=0.0)
