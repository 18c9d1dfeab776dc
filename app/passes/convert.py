"""`convert`: fp16 or bf16 ONNX models, checked on sample inputs before they are handed back.

The catalog side (config, checks); the pass that runs it is worker/passes/convert.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.errors import SpecInvalid
from app.passes.base import MAX_NODES, ModelInfo, NodeName, PassConfig, Technique


class ConvertConfig(PassConfig):
    """Convert floating-point weights and arithmetic to a 16-bit precision."""

    op: Literal["convert"] = Field(description="Precision conversion.")
    precision: Literal["fp16", "bf16"] = Field(
        description=(
            "`fp16`: weights and arithmetic in float16. `bf16`: weights stored as bfloat16 and "
            "cast to float32 where read (ONNX Runtime's CPU provider has no bf16 kernels)."
        )
    )
    keep_io_types: bool = Field(
        True,
        description="Model inputs and outputs stay float32 (casts are inserted inside). "
        "`false` is fp16 only: the model then takes and returns float16.",
    )
    op_block_list: list[NodeName] | None = Field(
        None,
        max_length=1000,
        description="ONNX op types kept in fp32. Default (null): onnxconverter-common's list "
        "(Resize, TopK, Range, CumSum, Min, Max, NonMaxSuppression, ML ops...); a list "
        "replaces it.",
    )
    node_block_list: list[NodeName] = Field(
        default_factory=list,
        max_length=MAX_NODES,
        description="Node names kept in fp32, in addition to the automatic fallback.",
    )
    auto_fallback: bool = Field(
        True,
        description="fp16 only: keep in fp32 every node whose values on sample inputs exceed "
        "half the fp16 range (65504), so they cannot overflow to inf.",
    )


class ConvertTechnique(Technique[ConvertConfig]):
    name = "convert"
    version = "1.0"
    config_cls = ConvertConfig
    input_formats = ("onnx",)
    output_format = "onnx"
    summary = "fp16 (or bf16-stored) ONNX with fp32 fallback where fp16 would overflow."

    def check(self, config: ConvertConfig, model: ModelInfo, pointer: str) -> None:
        super().check(config, model, pointer)
        if config.precision == "bf16" and not config.keep_io_types:
            raise SpecInvalid(
                "bf16 keeps float32 inputs and outputs: numpy (and so ONNX Runtime's Python API) "
                "has no bfloat16 type to feed, and the arithmetic stays float32 anyway.",
                pointer=f"{pointer}/keep_io_types",
            )
