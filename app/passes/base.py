"""What every technique of the catalog is: a typed config, declared formats and a cheap check.

The catalog is the API side of a technique (no model library needed); its implementation, the
`Pass` that runs it, lives in `worker/passes/` and is registered there by config type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints

from app.core.errors import SpecInvalid

# Bounds of a spec (RELIABILITY.md API-08): every string, list and number has one, so that a
# hostile spec costs a 422 with a JSON pointer, never memory, a 500 or a worker's time.
SpecId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")]
"""An object's id in a spec (the server's are UUIDs): at most 64 letters, digits, `-` or `_`."""
NodeName = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
"""An ONNX node name (or op type) as a spec lists it."""
MAX_NODES = 10_000  # names in one list of a step (`exclude_nodes`, `ignore_nodes`...)
MAX_SEED = 2**31 - 1


class PassConfig(BaseModel):
    """Base of every step config: strict (unknown fields refused), immutable, finite numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
