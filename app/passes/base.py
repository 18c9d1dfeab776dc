"""What every technique of the catalog is: a typed config, declared formats and a cheap check.

The catalog is the API side of a technique (no model library needed); its implementation, the
`Pass` that runs it, lives in `worker/passes/` and is registered there by config type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from app.core.errors import SpecInvalid


class PassConfig(BaseModel):
    """Base of every step config: strict (unknown fields refused) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=PassConfig)


@dataclass(frozen=True)
class ModelInfo:
    """What the API knows of a model when it checks a step (no torch needed)."""

    format: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


class Technique(Generic[ConfigT]):
    """One optimization technique as the catalog lists it and the API checks it."""

    name: ClassVar[str]
    version: ClassVar[str]  # recorded on each step the worker runs
    config_cls: ClassVar[type[PassConfig]]
    input_formats: ClassVar[tuple[str, ...]]
    output_format: ClassVar[str | None] = None  # None: same as the input
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    summary: ClassVar[str] = ""

    def output_format_for(self, config: ConfigT, input_format: str) -> str:
        """The format this step hands to the next one."""
        return self.output_format or input_format

    def check(self, config: ConfigT, model: ModelInfo, pointer: str) -> None:
        """Cheap API-side checks beyond the schema.

        Raises:
            SpecInvalid: with `pointer` naming the offending step.
        """
        if model.format not in self.input_formats:
            raise SpecInvalid(
                f"Step `{self.name}` takes {', '.join(self.input_formats)}, "
                f"but the model is {model.format} at this point.",
                pointer=pointer,
            )
