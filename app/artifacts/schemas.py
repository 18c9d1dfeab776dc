"""The JSON report's documented shape (schema_version "1"); published in OpenAPI.

Every number in it was measured by the worker in one run; a value that could not be measured is
null with a note. Unknown keys are kept (extra="allow") so that a newer worker's report still reads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class LatencyStats(_Open):
    mean: float | None = Field(None, description="Milliseconds per call.")
    std: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    iterations: int = Field(description="Timed calls (after warm-up).")
    throughput: float | None = Field(None, description="Samples per second at this batch size.")


class ModelMeasurement(_Open):
    format: str
    runtime: str = Field(description="`onnxruntime` or `torch`.")
    size_bytes: int
    compressed_size_bytes: int = Field(description="zlib level 6 of the file.")
    parameters: int | None = Field(
        description="Weight elements (ONNX: every non-integer-index initializer); null for a "
        "compiled TVM library, whose weights are not countable from the file."
    )
    nonzero_parameters: int | None
    sparsity: float | None
    load_ms: float
    load_rss_bytes: int = Field(description="Resident memory added by loading, in-process.")
    latency_ms: dict[str, LatencyStats] = Field(description="By batch size.")
    throughput: dict[str, float | None]
    memory: dict[str, Any] = Field(description="`peak_rss_bytes`, measured alone, and how.")


class OutputFidelity(_Open):
    max_abs_error: float | None
    mean_abs_error: float | None
    cosine_min: float | None = Field(description="Per-sample cosine similarity, worst sample.")
    cosine_mean: float | None
    top1_agreement: float | None = Field(description="Classifiers (2-D outputs) only.")
    nan_or_inf: bool
    shape_match: bool


class Fidelity(_Open):
    inputs: Literal["synthesized", "dataset"]
    samples: int
    batch_size: int | None = None
    outputs: dict[str, OutputFidelity]
    second_shape: dict[str, Any] | None = Field(
        None, description="The same comparison at other sizes of the dynamic axes."
    )


class Accuracy(_Open):
    metric: str
    baseline: float
    optimized: float
    drop: float = Field(description="Absolute: 0.01 = one point (for mse/mae: the rise).")
    samples: int
    batch_size: int


class StepRecord(_Open):
    op: str
    implicit: bool = Field(False, description="A conversion ModelPress inserted before a step.")
    config: dict[str, Any]
    pass_version: str
    wall_s: float
    input_format: str
    output_format: str
    metrics: dict[str, Any] = Field(description="What the step did, measured.")
    warnings: list[str]


class Verdict(_Open):
    met: bool | None = Field(description="Null when the job had no constraints.")
    reasons: list[str]
    notes: list[str]


class Report(_Open):
    schema_version: Literal["1"]
    job_id: str
    model: dict[str, Any]
    baseline: ModelMeasurement
    optimized: ModelMeasurement
    comparison: dict[str, Any] = Field(
        description="`size_ratio`, `speedup` (p50 ratio by batch size), `noise` (control/original)."
    )
    fidelity: Fidelity
    accuracy: Accuracy | None = None
    steps: list[StepRecord]
    environment: dict[str, Any]
    benchmark: dict[str, Any]
    verdict: Verdict
    candidates: list[dict[str, Any]] | None = Field(None, description="`recipe: auto` only.")
