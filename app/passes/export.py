"""`export`: convert between ONNX, TorchScript and `.pt2`, validated numerically.

The catalog side (config, checks); the pass that runs it is worker/passes/export.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.errors import SpecInvalid
from app.passes.base import ModelInfo, PassConfig, Technique

ExportFormat = Literal["onnx", "torchscript", "pt2", "tvm"]


# (from, to) pairs this pass can do; everything else is refused at submit time.
SUPPORTED = {
    ("pt2", "onnx"),
    ("torchscript", "onnx"),
    ("pt2", "torchscript"),
    ("onnx", "onnx"),
    ("onnx", "torchscript"),
    ("onnx", "tvm"),
}


WHY_NOT = {
    ("torchscript", "pt2"): "torch.export cannot trace a TorchScript module (torch 2.13).",
    ("onnx", "pt2"): "torch.export cannot trace the converted graph's shape arithmetic; "
    "export to `torchscript` instead.",
}


class ExportConfig(PassConfig):
    """Convert the model to another format."""

    op: Literal["export"] = Field(description="Format conversion.")
    format: ExportFormat = Field(
        description="Target format: `onnx`, `torchscript`, `pt2`, or `tvm` (a library compiled for "
        "this CPU with Apache TVM, where the `tvm` extra is installed)."
    )
    opset: int = Field(
        18, ge=13, le=23, description="ONNX opset of the result (ONNX targets only)."
    )
    rtol: float = Field(1e-3, gt=0, le=1, description="Relative tolerance of the validation.")
    atol: float = Field(1e-4, gt=0, le=1, description="Absolute tolerance of the validation.")


class ExportTechnique(Technique[ExportConfig]):
    name = "export"
    version = "1.0"
    config_cls = ExportConfig
    input_formats = ("onnx", "torchscript", "pt2")
    summary = "Format conversion (ONNX, TorchScript, .pt2), checked against the original."

    def output_format_for(self, config: ExportConfig, input_format: str) -> str:
        return config.format

    def check(self, config: ExportConfig, model: ModelInfo, pointer: str) -> None:
        super().check(config, model, pointer)
        pair = (model.format, config.format)
        if pair in SUPPORTED:
            return
        reason = WHY_NOT.get(pair, f"The model already is {config.format}.")
        raise SpecInvalid(
            f"Cannot export {model.format} to {config.format}: {reason}", pointer=pointer
        )
