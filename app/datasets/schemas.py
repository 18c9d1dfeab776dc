"""Response shapes of `/v1/datasets`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ArraySpec(BaseModel):
    """One array of an `.npz` dataset."""

    name: str = Field(description="The array's name: a model input's, or `labels`.")
    shape: list[int] = Field(description="Its shape; the first axis is the samples.")
    dtype: str = Field(description="Element type, e.g. `float32`, `int64`.")


class DatasetRead(BaseModel):
    """An uploaded dataset."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="The dataset's id (a UUID), for `dataset_id` fields of a spec.")
    name: str = Field(description="Display name: the `name` given at upload, or the file's name.")
    size_bytes: int = Field(description="Size of the uploaded file.")
    sha256: str = Field(description="Hex sha256 of the uploaded bytes.")
    arrays: list[ArraySpec] = Field(description="Every array of the file: name, shape, dtype.")
    num_samples: int = Field(description="Length of the first axis, the same in every array.")
    created_at: datetime = Field(description="When it was uploaded.")
