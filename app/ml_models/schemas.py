"""Request and response shapes of `/v1/models`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TensorSpec(BaseModel):
    name: str
    dtype: str
    shape: list[int | str | None]


class MlModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: str = Field(description="`onnx`, `torchscript` or `pt2`, detected from the bytes.")
    size_bytes: int
    sha256: str
    status: str = Field(description="`validating`, `ready` or `rejected`.")
    inputs: list[TensorSpec] | None = Field(None, description="Known once `ready`.")
    outputs: list[TensorSpec] | None = Field(None, description="Known once `ready`.")
    parameter_count: int | None = None
    opset: int | None = None
    input_shapes: Any | None = Field(None, description="Shapes given at upload, if any.")
    error: dict[str, Any] | None = Field(None, description="Why it was `rejected` (a problem).")
    created_at: datetime
    updated_at: datetime
