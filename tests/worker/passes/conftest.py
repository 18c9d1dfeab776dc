"""Fixtures shared by the pass tests and by their no-op guard (test_noop_guard.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

DAMAGE = 0.75  # fraction of conv channels and hidden neurons zeroed in the distillation student


@pytest.fixture(scope="session")
def digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's digits as 1x8x8 images in [0, 1], split by a seeded permutation: 1000 to
    train the teacher, 500 for distillation datasets, 297 test images neither sees."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(images))
    parts = {"teacher": order[:1000], "distill": order[1000:1500], "test": order[1500:]}
    return {k: (images[v], data.target[v].astype(np.int64)) for k, v in parts.items()}


@pytest.fixture(scope="session")
def distill_models(
    digits_split: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A trained `DigitsCnn` teacher (ONNX and .pt2) and its damaged copy, the student (ONNX)."""
    import torch
    from networks import DigitsCnn, damaged_copy, export_digits, train_classifier

    torch.manual_seed(0)
    teacher = train_classifier(DigitsCnn(), *digits_split["teacher"], epochs=30, lr=2e-3, threads=1)
    folder = tmp_path_factory.mktemp("distill")
    paths = {"teacher": export_digits(teacher, folder / "teacher.onnx")}
    batch = {"x": {0: torch.export.Dim("batch", max=4096)}}
    program = torch.export.export(teacher, (torch.randn(2, 1, 8, 8),), dynamic_shapes=batch)
    torch.export.save(program, str(folder / "teacher.pt2"))
    paths["teacher_pt2"] = folder / "teacher.pt2"
    paths["student"] = export_digits(damaged_copy(teacher, DAMAGE), folder / "student.onnx")
    return paths


@pytest.fixture(scope="session")
def dead_channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`networks.dead_channel_cnn` exported to ONNX (dynamo), 64 calibration images for it, and
    the weight shapes (`support.weight_shapes` positions) left once exactly its dead units go."""
    import torch
    from networks import dead_channel_cnn, export_onnx

    folder = tmp_path_factory.mktemp("dead-channels")
    torch.manual_seed(0)
    source = export_onnx(dead_channel_cnn(), torch.randn(2, 3, 8, 8), folder / "cnn.onnx")
    data = folder / "calibration.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((64, 3, 8, 8), np.float32))
    shapes = {3: (20, 16, 3, 3), 4: (28, 1, 3, 3), 6: (36, 256)}  # b, dw and fc lose 4 each
    return {"model": source, "calibration": data, "pruned_shapes": shapes}
