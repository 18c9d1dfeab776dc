"""`distill`: knowledge distillation from the original model (teacher) into the current one.

The catalog side (config, checks); the pass that runs it is worker/passes/distill.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.passes.base import MAX_SEED, PassConfig, SpecId, Technique


class DistillConfig(PassConfig):
    """Knowledge distillation from the original model into the current one."""

    op: Literal["distill"] = Field(description="Knowledge distillation.")
    dataset_id: SpecId = Field(
        description="Uploaded .npz dataset: one array per model input; `labels` is optional.",
    )
    temperature: float = Field(
        4.0, gt=0, le=100, description="Softmax temperature of the soft targets."
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of the soft (teacher) loss; `1 - alpha` weighs cross-entropy on "
        "`labels`. Forced to 1 when the dataset has no labels.",
    )
    epochs: int = Field(5, ge=1, le=100, description="Passes over the training split.")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    batch_size: int = Field(64, ge=1, le=4096, description="Samples per optimization step.")
    max_samples: int | None = Field(
        None, ge=2, le=1_000_000, description="Use only the first this many samples."
    )
    validation_split: float = Field(
        0.2,
        gt=0,
        le=0.5,
        description="Fraction of samples (seeded random) held out to measure the result.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the split, shuffling and init.")


class DistillTechnique(Technique[DistillConfig]):
    name = "distill"
    version = "1.0"
    config_cls = DistillConfig
    input_formats = ("onnx",)
    devices = ("cpu", "cuda")
    summary = "Knowledge distillation from the original model on a dataset (labels optional)."
