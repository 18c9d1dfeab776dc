"""`optimize`: ONNX Runtime offline graph optimization (constant folding, fusions), and its
transformer optimizer's fusions where a graph matches them; the output is checked against the
input at two batch sizes.

The catalog side (config, checks); the pass that runs it is worker/passes/optimize.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.passes.base import PassConfig, Technique


class OptimizeConfig(PassConfig):
    """Rewrite the graph offline so that it loads and runs faster."""

    op: Literal["optimize"] = Field(description="Graph optimization.")
    level: Literal["basic", "extended"] = Field(
        "basic",
        description=(
            "`basic`: constant folding and redundant-node elimination (portable ONNX). "
            "`extended`: also operator fusions (ONNX Runtime contrib ops)."
        ),
    )
    transformer_fusions: bool = Field(
        False,
        description="First run ONNX Runtime's transformer optimizer (attention, LayerNorm, "
        "GELU, skip/bias fusions) where the graph matches BERT-like patterns.",
    )
    num_heads: int = Field(
        0, ge=0, le=1024, description="Attention heads, for attention fusion; 0 = detect."
    )
    hidden_size: int = Field(
        0, ge=0, le=65536, description="Hidden size, for attention fusion; 0 = detect."
    )


class OptimizeTechnique(Technique[OptimizeConfig]):
    name = "optimize"
    version = "1.1"
    config_cls = OptimizeConfig
    input_formats = ("onnx",)
    summary = "ONNX Runtime offline graph optimization and transformer fusions, verified."
