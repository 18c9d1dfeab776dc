"""`prune` with `method: channel` and `method: neuron`: structured pruning of ONNX graphs.

The catalog side (config, checks); the pass that runs it is worker/passes/prune_channel.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.passes.base import MAX_NODES, MAX_SEED, NodeName, PassConfig, SpecId, Technique


class PruneChannelConfig(PassConfig):
    """Remove whole channels and neurons, so that tensors really shrink (structured pruning)."""

    op: Literal["prune"] = Field(description="Pruning.")
    method: Literal["channel"] = Field(
        description="`channel`: structured pruning; removes conv channels, linear and FFN "
        "neurons with everything coupled to them (batch-norm, residual partners, next layers)."
    )
    ratio: float = Field(
        gt=0.0,
        lt=1.0,
        description="Fraction of the channels of each group removed (0 < r < 1), rounded down, "
        "before `round_to`.",
    )
    importance: Literal["l1", "l2", "random"] = Field(
        "l1",
        description="Which channels go first: `l1` / `l2`: smallest norm of the producer weight "
        "slices, summed over the group's producers; `random`: seeded random order (a baseline).",
    )
    round_to: int = Field(
        8,
        ge=1,
        le=1024,
        description="The kept count of a group larger than this is rounded up to a multiple of "
        "it (measured: odd channel counts gave no speed-up, multiples of 8 did). 1 disables it.",
    )
    ignore_nodes: list[NodeName] = Field(
        default_factory=list,
        max_length=MAX_NODES,
        description="Node names whose channels are never pruned (inputs and outputs): their "
        "weights stay untouched, and so do the groups coupled to them.",
    )
    scope: Literal["layer", "global"] = Field(
        "layer",
        description="`layer`: every group loses `ratio` of its channels. `global`: `ratio` of "
        "all channels, least important first, with scores normalized by their group's mean "
        "(groups lose different fractions; every group keeps at least one channel).",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of `importance: random`.")


class PruneNeuronConfig(PassConfig):
    """Remove channels and neurons that stay (near) zero on a calibration dataset."""

    op: Literal["prune"] = Field(description="Pruning.")
    method: Literal["neuron"] = Field(
        description="`neuron`: removes the channels/neurons whose activations at the inputs of "
        "the layers that read them are (near) zero on a calibration dataset."
    )
    calibration_dataset_id: SpecId = Field(
        description="An uploaded .npz of representative model inputs (labels unused)."
    )
    threshold: float = Field(
        1e-6,
        ge=0.0,
        lt=1.0,
        description="A unit is dead when its mean absolute activation is at most `threshold` "
        "times the mean over its group (relative, so independent of the activations' scale). "
        "The default removes only units that are zero up to float rounding, which leaves the "
        "outputs unchanged on the calibration data; larger values also remove weak units.",
    )
    max_ratio: float = Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description="At most this fraction of a group is removed (the least active first); "
        "every group keeps at least one unit.",
    )
    calibration_samples: int = Field(
        512, ge=1, le=100_000, description="Samples of the dataset used (its first ones)."
    )
    round_to: int = Field(
        1,
        ge=1,
        le=1024,
        description="Round the kept count up to a multiple of this by keeping the most active "
        "dead units (8 helps speed; the default 1 removes every dead unit found).",
    )
    ignore_nodes: list[NodeName] = Field(
        default_factory=list,
        max_length=MAX_NODES,
        description="Node names whose channels are never pruned (inputs and outputs).",
    )


class PruneChannelTechnique(Technique[PruneChannelConfig]):
    name = "prune.channel"
    version = "1.0"
    config_cls = PruneChannelConfig
    input_formats = ("onnx",)
    output_format = "onnx"
    summary = (
        "Structured pruning: removes whole conv channels, linear/FFN neurons and attention "
        "heads, so tensors really shrink."
    )


class PruneNeuronTechnique(Technique[PruneNeuronConfig]):
    name = "prune.neuron"
    version = "1.0"
    config_cls = PruneNeuronConfig
    input_formats = ("onnx",)
    output_format = "onnx"
    summary = "Removes the channels and neurons that are dead on a calibration dataset."
