"""What `GET /v1/passes` answers: each technique of the catalog with its step schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TechniqueRead(BaseModel):
    """One technique: its op name, formats, devices and the JSON schema of its step."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(description="`op`, or `op.method` for families (`prune.channel`).")
    version: str = Field(description="Recorded on every step the worker runs.")
    summary: str = Field(description="What the technique does, in one sentence.")
    input_formats: list[str] = Field(description="Model formats the step takes.")
    output_format: str | None = Field(description="The format it hands on; null: the input's.")
    devices: list[str] = Field(description="Where it runs: `cpu`, `cuda`.")
    step_schema: dict[str, Any] = Field(
        alias="schema", description="JSON schema of the step's fields (the `/docs` text)."
    )
