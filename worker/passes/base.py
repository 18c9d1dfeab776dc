"""What a running pass is: the implementation of one catalog technique, inside the sandbox."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol

from app.passes.base import ConfigT, Technique


class PassTools(Protocol):
    """What the worker lends a running pass (worker/pipeline/tools.py implements it)."""

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


@dataclass(frozen=True)
class AccuracyTarget:
    """The job's `constraints.max_accuracy_drop`, judged with its `evaluation` metric on a
    labelled dataset (for `keep_float: auto`)."""

    max_drop: float
    dataset_id: str  # the job's evaluation dataset, unless the step's own data has labels
    metric: str


@dataclass
class PassContext:
    """What a running pass gets: its input file and a private working directory."""

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
    target_cosine: float | None = None  # the job's constraints.min_cosine, for mixed precision
    target_accuracy: AccuracyTarget | None = None  # its max_accuracy_drop, where it has labels
    speed_batches: tuple[int, ...] = ()  # its benchmark batch sizes, where a pass times itself


@dataclass
class PassResult:
    """A pass's output file, its format, what it measured and what the user should know."""

    output_path: Path
    output_format: str
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] | None = None  # steps[i].sensitivity, most sensitive first


class Pass(ABC, Generic[ConfigT]):
    """Runs one technique of the catalog (`technique`) on a model file."""

    technique: ClassVar[Technique[Any]]

    @property
    def name(self) -> str:
        return self.technique.name

    @property
    def version(self) -> str:
        return self.technique.version

    @abstractmethod
    def run(self, ctx: PassContext, config: ConfigT) -> PassResult:
        """Apply the technique to `ctx.input_path`, writing under `ctx.work_dir`."""
