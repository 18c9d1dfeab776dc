"""Request and response shapes of `/v1/models`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TensorSpec(BaseModel):
    """One input or output of a model, as its graph declares it."""

    name: str = Field(description="The input's or output's name in the graph.")
    dtype: str = Field(description="Element type, e.g. `float32`, `int64`.")
    shape: list[int | str | None] = Field(
        description="Each dimension: a size, a symbolic name (`batch`), or null when unknown."
    )


class MlModelRead(BaseModel):
    """An uploaded model."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="The model's id (a UUID): `model_id` of a job spec.")
    name: str = Field(description="Display name: the `name` given at upload, or the file's name.")
    format: str = Field(description="`onnx`, `torchscript` or `pt2`, detected from the bytes.")
    size_bytes: int = Field(description="Size of the uploaded file.")
    sha256: str = Field(description="Hex sha256 of the uploaded bytes (the download's `ETag`).")
    status: str = Field(description="`validating`, `ready` or `rejected`.")
    inputs: list[TensorSpec] | None = Field(None, description="Known once `ready`.")
    outputs: list[TensorSpec] | None = Field(None, description="Known once `ready`.")
    parameter_count: int | None = Field(None, description="Weight elements, known once `ready`.")
    opset: int | None = Field(None, description="The ONNX default-domain opset (ONNX models).")
    input_shapes: Any | None = Field(None, description="Shapes given at upload, if any.")
    error: dict[str, Any] | None = Field(None, description="Why it was `rejected` (a problem).")
    created_at: datetime = Field(description="When it was uploaded.")
    updated_at: datetime = Field(description="Its last change (the end of inspection).")
