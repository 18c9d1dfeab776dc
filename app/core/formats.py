"""Model formats by name and the file extension each is stored and downloaded under.

One place for both sides: the API names downloads with it and the worker names its outputs with
it (`model.<ext>`), so an uploaded model and a job's result of one format end the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

ONNX: Final = "onnx"
TORCHSCRIPT: Final = "torchscript"
PT2: Final = "pt2"
TVM: Final = "tvm"  # a compiled shared library; produced by an export step, never uploaded

MODEL_EXTENSIONS: Final[Mapping[str, str]] = MappingProxyType(
    {ONNX: "onnx", TORCHSCRIPT: "pt", PT2: "pt2", TVM: "so"}
)


def model_filename(stem: str, fmt: str) -> str:
    """`<stem>.<ext>` of a model of format `fmt` (`.bin` for a format without an extension)."""
    return f"{stem}.{MODEL_EXTENSIONS.get(fmt, 'bin')}"
