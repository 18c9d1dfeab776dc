"""What every optimization pass is: a typed config, declared formats, a cheap check, a run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

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


class PassTools(Protocol):
    """What the worker lends a running pass (implemented in worker/, which app never imports)."""

    def load_torch(self, path: Path, fmt: str) -> tuple[Any, Any]:
        """(callable module, ExportedProgram or None) through torch's restricted loaders."""
        ...

    def example_inputs(self, batch_size: int) -> dict[str, Any]:
        """Synthesized numpy inputs for the model's signature at `batch_size`."""
        ...

    def validate(
        self,
        reference: Path,
        reference_format: str,
        candidate: Path,
        candidate_format: str,
        *,
        rtol: float,
        atol: float,
    ) -> dict[str, Any]:
        """Compare two models' outputs at two batch sizes; raise JobFailure past tolerance."""
        ...

    def dataset_inputs(
        self, dataset_id: str, limit: int | None = None
    ) -> tuple[dict[str, Any], Any]:
        """(numpy arrays by model input name, `labels` array or None) of an uploaded dataset."""
        ...


@dataclass
class PassContext:
    """What a running pass gets in the sandbox: its input file and a private working directory."""

    input_path: Path
    input_format: str
    work_dir: Path
    step_index: int
    threads: int
    tools: PassTools
    inputs: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    datasets: dict[str, Path] = field(default_factory=dict)
    original_path: Path | None = None
    original_format: str | None = None


@dataclass
class PassResult:
    """A pass's output file, its format, what it measured and what the user should know."""

    output_path: Path
    output_format: str
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Pass(ABC, Generic[ConfigT]):
    """One optimization technique; `run` imports torch/onnx/onnxruntime lazily, in the sandbox."""

    name: ClassVar[str]
    version: ClassVar[str]
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

    @abstractmethod
    def run(self, ctx: PassContext, config: ConfigT) -> PassResult:
        """Apply the technique to `ctx.input_path`, writing under `ctx.work_dir`."""
