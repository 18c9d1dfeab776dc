"""`prune` with `method: magnitude`: unstructured L1 magnitude pruning of ONNX weight initializers.

The catalog side (config, checks); the pass that runs it is worker/passes/prune_magnitude.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.passes.base import MAX_NODES, NodeName, PassConfig, Technique

PrunableOp = Literal["Conv", "Gemm", "MatMul"]


class PruneMagnitudeConfig(PassConfig):
    """Zero the smallest-magnitude weights (unstructured pruning)."""

    op: Literal["prune"] = Field(description="Pruning.")
    method: Literal["magnitude"] = Field(
        description="`magnitude`: unstructured L1 pruning; zeroes individual weights."
    )
    sparsity: float = Field(
        gt=0.0, lt=1.0, description="Fraction of the chosen weights set to zero (0 < s < 1)."
    )
    scope: Literal["global", "layer"] = Field(
        "global",
        description="`global`: one magnitude threshold over all chosen weights (layers end up "
        "with different sparsities). `layer`: every weight tensor pruned to `sparsity`.",
    )
    op_types: list[PrunableOp] = Field(
        default_factory=lambda: list[PrunableOp](["Conv", "Gemm", "MatMul"]),
        min_length=1,
        max_length=3,
        description="Node types whose weight (the initializer at input 1) is pruned; a MatMul "
        "counts only when its second input is an initializer (not activation x activation).",
    )
    exclude_nodes: list[NodeName] = Field(
        default_factory=list,
        max_length=MAX_NODES,
        description="Node names whose weights stay dense (e.g. a sensitive first or last layer).",
    )
    min_elements: int = Field(
        1,
        ge=1,
        le=2**40,
        description="Weights with fewer elements stay dense. The default prunes every weight; "
        "raise it (e.g. to 1024) to leave tiny layers, which save nothing, untouched.",
    )


class PruneMagnitudeTechnique(Technique[PruneMagnitudeConfig]):
    name = "prune.magnitude"
    version = "1.0"
    config_cls = PruneMagnitudeConfig
    input_formats = ("onnx",)
    output_format = "onnx"
    summary = "Unstructured L1 magnitude pruning of Conv/Gemm/MatMul weights (smaller zip only)."
