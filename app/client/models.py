"""Typed results of the client: pydantic mirrors of the server's public shapes.

Written out here, not imported: the client installs without the server side (app.*.schemas pull
in the database and the catalog). Every model allows unknown fields, and everything but the ids
and statuses has a default, so that a newer (or older) server's answers still read. Each result
also answers `result["field"]` and `result.get("field")`, for code written against the plain
JSON dicts the client used to return.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

# The wire names of the terminal job statuses (app.db.orm.JobStatus on the server).
TERMINAL = ("succeeded", "failed", "cancelled")
EXIT_MET, EXIT_FAILED, EXIT_BUDGET_MISSED, EXIT_ERROR = 0, 1, 2, 3


class Result(BaseModel):
    """A typed answer that still reads like the JSON it came from."""

    # `model_id` is a field of a job: no "model_" namespace warning (older pydantic warns).
    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        """The field (or extra key) `key`, or `default`."""
        return getattr(self, key, default)

    def to_json(self) -> Any:
        """The JSON-ready dict (datetimes as ISO strings, extras kept)."""
        return self.model_dump(mode="json")


T = TypeVar("T", bound=Result)


class Page(BaseModel, Generic[T]):
    """One page of a list: `items` and the cursor of the next page (None on the last)."""

    model_config = ConfigDict(extra="allow")

    items: list[T]
    next_cursor: str | None = None


class TensorSpec(Result):
    name: str
    dtype: str = ""
    shape: list[int | str | None] = Field(default_factory=list)


class Model(Result):
    """An uploaded model: `validating`, then `ready` (inputs, outputs known) or `rejected`."""

    id: str
    status: str
    name: str = ""
    format: str = ""
    size_bytes: int = 0
    sha256: str = ""
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    parameter_count: int | None = None
    opset: int | None = None
    input_shapes: Any | None = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ArraySpec(Result):
    name: str
    shape: list[int] = Field(default_factory=list)
    dtype: str = ""


class Dataset(Result):
    id: str
    name: str = ""
    size_bytes: int = 0
    sha256: str = ""
    arrays: list[ArraySpec] = Field(default_factory=list)
    num_samples: int = 0
    created_at: datetime | None = None


class Artifact(Result):
    name: str
    kind: str = ""
    media_type: str = ""
    size_bytes: int = 0
    sha256: str = ""


class Progress(Result):
    """What the worker last said: `fraction` done, a `message` such as "step 1/2: quantize"."""

    fraction: float = 0.0
    message: str = ""
    step: int | None = None


class Job(Result):
    id: str
    status: str
    model_id: str = ""
    cancel_requested: bool = False
    progress: Progress = Field(default_factory=Progress)
    error: dict[str, Any] | None = None
    attempt: int = 0
    spec: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[Artifact] = Field(default_factory=list)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def artifact(self, kind: str) -> Artifact | None:
        """The first artifact of `kind` (`model` is exactly one on a succeeded job)."""
        return next((a for a in self.artifacts if a.kind == kind), None)


class Verdict(Result):
    met: bool | None = None
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Measurement(Result):
    """`baseline` or `optimized`: sizes typed, the rest (latency by batch size...) as JSON."""

    format: str = ""
    size_bytes: int | None = None
    parameters: int | None = None
    latency_ms: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Accuracy(Result):
    metric: str
    baseline: float | None = None
    optimized: float | None = None
    drop: float | None = None


class Report(Result):
    """The JSON report: its top-level keys typed, their insides kept as JSON."""

    schema_version: str = ""
    job_id: str = ""
    model: dict[str, Any] = Field(default_factory=dict)
    baseline: Measurement = Field(default_factory=Measurement)
    optimized: Measurement = Field(default_factory=Measurement)
    comparison: dict[str, Any] = Field(default_factory=dict)
    fidelity: dict[str, Any] = Field(default_factory=dict)
    accuracy: Accuracy | None = None
    steps: list[dict[str, Any]] = Field(default_factory=list)
    environment: dict[str, Any] = Field(default_factory=dict)
    benchmark: dict[str, Any] = Field(default_factory=dict)
    verdict: Verdict = Field(default_factory=Verdict)
    candidates: list[dict[str, Any]] | None = None
    timings: dict[str, Any] | None = None


class JobEvent(Result):
    """One event of a job: `status`, `step`, `progress`, `log` or `verdict` (PRODUCT.md).

    `id` is the server's event id (None for events synthesized by the polling fallback);
    `data` is the event's JSON (a non-JSON payload arrives as `{"text": ...}`)."""

    event: str
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    polled: bool = False


class OptimizeResult(Result):
    """What `Client.optimize` did: the model, the job, its verdict and the files written."""

    model: Model
    job: Job | None = Field(None, description="None when the model was rejected.")
    report: Report | None = None
    files: list[Path] = Field(default_factory=list)

    @property
    def verdict(self) -> Verdict | None:
        return self.report.verdict if self.report else None

    @property
    def exit_code(self) -> int:
        """The CLI's: 0 succeeded and met (or no budget, or not waited for), 1 model rejected or
        job failed or cancelled, 2 budget missed."""
        if self.job is None:
            return EXIT_FAILED
        if not self.job.terminal:
            return EXIT_MET
        if self.job.status != "succeeded":
            return EXIT_FAILED
        verdict = self.verdict
        return EXIT_BUDGET_MISSED if verdict is not None and verdict.met is False else EXIT_MET
