"""The JSON report's documented shape (schema_version "1"); published in OpenAPI.

Every number in it was measured by the worker in one run; a value that could not be measured is
null with a note. Unknown keys are kept (extra="allow") so that a newer worker's report still reads.
The worker validates each report against `Report` before writing it, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The HTML report needs nothing from anywhere: inline styles and inline SVG, no script, no image,
# no fetch of any kind. `default-src` does not cover `base-uri` and `form-action`, so they are
# closed too. Served as the HTTP header and written into the page's meta tag, so the page stays
# locked down when opened from disk; hence no `frame-ancestors` (ignored in a meta tag).
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelRef(_Open):
    id: str
    name: str
    format: str
    sha256: str


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
    runtime: str = Field(description="`onnxruntime`, `torch` or `tvm`.")
    provider: str | None = Field(
        None, description="What ran it: an ONNX Runtime execution provider, `torch-<device>`, ..."
    )
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


class Comparison(_Open):
    size_ratio: float | None = Field(description="Optimized size over original size.")
    speedup: dict[str, float] = Field(description="Original p50 over optimized p50, by batch size.")
    noise: dict[str, float] | None = Field(
        None, description="Control p50 over original p50 (a second copy of the original)."
    )


class OutputFidelity(_Open):
    max_abs_error: float | None
    mean_abs_error: float | None
    cosine_min: float | None = Field(description="Per-sample cosine similarity, worst sample.")
    cosine_mean: float | None
    top1_agreement: float | None = Field(
        description="Argmax along the last axis agrees: classifiers (2-D), sequences (3-D, at "
        "every position); null for other outputs."
    )
    top1_agreement_last: float | None = Field(
        None,
        description="Sequences with an attention-mask input: agreement at each sample's last "
        "non-padding position (a decoder's next token).",
    )
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


class SensitivityRow(_Open):
    node: str
    op_type: str
    error: float | None = Field(
        description="Drop of the worst output's cosine_mean with this node alone quantized; "
        "null when the time budget left it unmeasured."
    )
    time_share: float = Field(description="Its share of the float model's node time.")


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
    sensitivity: list[SensitivityRow] | None = Field(
        None, description="`quantize` with `sensitivity` or `keep_float: auto`: per node."
    )


class Environment(_Open):
    device: str
    execution_provider: list[str]
    cpu_model: str | None
    cpu_flags: list[str]
    cores: int | None
    threads: int
    memory_bytes: int | None
    python: str
    platform: str
    libraries: dict[str, str] = Field(description="Versions keyed by distribution name.")
    gpu: str | None = Field(None, description="CUDA jobs only, as are the other `gpu_*` keys.")
    gpu_memory_bytes: int | None = None
    cuda_runtime: str | None = None
    gpu_capability: str | None = None


class BenchmarkSettings(_Open):
    batch_sizes: list[int]
    iterations: int
    warmup: int
    threads: int
    interleaved: bool = Field(description="Original and optimized timed in alternating bursts.")
    input_shapes: dict[str, list[Any]] | None = None
    inputs: list[dict[str, Any]] = Field(description="The inputs fed: name, dtype, shape.")


class Verdict(_Open):
    met: bool | None = Field(description="Null when the job had no constraints.")
    reasons: list[str]
    notes: list[str]


class Candidate(_Open):
    name: str
    steps: list[dict[str, Any]]
    error: str | None = Field(None, description="Why it did not run; null when it ran.")
    met: bool | None = None
    chosen: bool = False
    size_bytes: int | None = None
    latency_ms_p50: dict[str, float] | None = Field(None, description="By batch size.")
    speedup: dict[str, float] | None = None
    cosine_min: float | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None
    reasons: list[str] | None = None
    wall_s: float | None = None


class Report(_Open):
    schema_version: Literal["1"]
    job_id: str
    model: ModelRef
    baseline: ModelMeasurement
    optimized: ModelMeasurement
    comparison: Comparison
    fidelity: Fidelity
    accuracy: Accuracy | None = None
    steps: list[StepRecord]
    environment: Environment
    benchmark: BenchmarkSettings
    verdict: Verdict
    candidates: list[Candidate] | None = Field(None, description="`recipe: auto` only.")
