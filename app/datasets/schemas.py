"""Response shapes of `/v1/datasets`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ArraySpec(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    size_bytes: int
    sha256: str
    arrays: list[ArraySpec]
    num_samples: int
    created_at: datetime
