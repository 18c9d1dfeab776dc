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
    id: str = Field(description="The model's id.")
    name: str = Field(description="Its display name.")
    format: str = Field(description="`onnx`, `torchscript` or `pt2`.")
    sha256: str = Field(description="Hex sha256 of the uploaded bytes.")


class LatencyStats(_Open):
    mean: float | None = Field(None, description="Milliseconds per call.")
    std: float | None = Field(None, description="Standard deviation, ms.")
    min: float | None = Field(None, description="Fastest call, ms.")
    max: float | None = Field(None, description="Slowest call, ms.")
    p50: float | None = Field(None, description="Median, ms.")
    p90: float | None = Field(None, description="90th percentile, ms.")
    p95: float | None = Field(None, description="95th percentile, ms.")
    p99: float | None = Field(None, description="99th percentile, ms.")
    iterations: int = Field(description="Timed calls (after warm-up).")
    throughput: float | None = Field(None, description="Samples per second at this batch size.")


class ModelMeasurement(_Open):
    format: str = Field(
        description="The measured file's format (`onnx`, `torchscript`, `pt2`, `tvm`)."
    )
    runtime: str = Field(description="`onnxruntime`, `torch` or `tvm`.")
    provider: str | None = Field(
        None, description="What ran it: an ONNX Runtime execution provider, `torch-<device>`, ..."
    )
    size_bytes: int = Field(description="Size on disk, in bytes.")
    compressed_size_bytes: int = Field(description="zlib level 6 of the file.")
    parameters: int | None = Field(
        description="Weight elements (ONNX: every non-integer-index initializer); null for a "
        "compiled TVM library, whose weights are not countable from the file."
    )
    nonzero_parameters: int | None = Field(
        description="Weight elements that are not zero; null where `parameters` is."
    )
    sparsity: float | None = Field(
        description="Fraction of weight elements that are zero; null where `parameters` is."
    )
    load_ms: float = Field(description="Time to load the model and make it ready to run.")
    load_rss_bytes: int = Field(description="Resident memory added by loading, in-process.")
    latency_ms: dict[str, LatencyStats] = Field(description="By batch size.")
    throughput: dict[str, float | None] = Field(
        description="Samples per second, by batch size (null: not measured)."
    )
    memory: dict[str, Any] = Field(description="`peak_rss_bytes`, measured alone, and how.")


class Comparison(_Open):
    size_ratio: float | None = Field(description="Optimized size over original size.")
    speedup: dict[str, float] = Field(description="Original p50 over optimized p50, by batch size.")
    noise: dict[str, float] | None = Field(
        None, description="Control p50 over original p50 (a second copy of the original)."
    )


class OutputFidelity(_Open):
    max_abs_error: float | None = Field(
        description="Largest absolute difference from the original's output."
    )
    mean_abs_error: float | None = Field(
        description="Mean absolute difference from the original's output."
    )
    cosine_min: float | None = Field(description="Per-sample cosine similarity, worst sample.")
    cosine_mean: float | None = Field(
        description="Per-sample cosine similarity, mean over samples."
    )
    top1_agreement: float | None = Field(
        description="Argmax along the last axis agrees: classifiers (2-D), sequences (3-D, at "
        "every position); null for other outputs."
    )
    top1_agreement_last: float | None = Field(
        None,
        description="Sequences with an attention-mask input: agreement at each sample's last "
        "non-padding position (a decoder's next token).",
    )
    nan_or_inf: bool = Field(description="The output holds NaN or infinite values.")
    shape_match: bool = Field(description="The output has the original's shape.")


class Fidelity(_Open):
    inputs: Literal["synthesized", "dataset"] = Field(
        description="`dataset` (the evaluation or calibration data) or `synthesized` from the "
        "model's signature."
    )
    samples: int = Field(description="Samples compared.")
    batch_size: int | None = Field(None, description="Batch size the comparison ran at.")
    outputs: dict[str, OutputFidelity] = Field(description="By output name.")
    second_shape: dict[str, Any] | None = Field(
        None, description="The same comparison at other sizes of the dynamic axes."
    )


class Accuracy(_Open):
    metric: str = Field(
        description="The evaluation metric (`accuracy`, `top5`, `mse`, `mae`, `cosine`)."
    )
    baseline: float = Field(description="The original model's score.")
    optimized: float = Field(description="The optimized model's score.")
    drop: float = Field(description="Absolute: 0.01 = one point (for mse/mae: the rise).")
    samples: int = Field(description="Labelled samples evaluated.")
    batch_size: int = Field(description="Batch size of the evaluation.")


class SensitivityRow(_Open):
    node: str = Field(description="The node's name in the float graph.")
    op_type: str = Field(description="Its ONNX op type.")
    error: float | None = Field(
        description="Drop of the worst output's cosine_mean with this node alone quantized; "
        "null when the time budget left it unmeasured."
    )
    time_share: float = Field(description="Its share of the float model's node time.")


class StepRecord(_Open):
    op: str = Field(description="The step's op (`prune`, `quantize`, ...).")
    implicit: bool = Field(False, description="A conversion ModelPress inserted before a step.")
    config: dict[str, Any] = Field(description="The step's config with every default filled in.")
    pass_version: str = Field(description="Version of the implementation that ran it.")
    wall_s: float = Field(description="Seconds it took.")
    input_format: str = Field(description="The model format it took.")
    output_format: str = Field(description="The model format it produced.")
    metrics: dict[str, Any] = Field(description="What the step did, measured.")
    warnings: list[str] = Field(description="What the user should know.")
    sensitivity: list[SensitivityRow] | None = Field(
        None, description="`quantize` with `sensitivity` or `keep_float: auto`: per node."
    )


class Environment(_Open):
    device: str = Field(description="`cpu` or `cuda`.")
    execution_provider: list[str] = Field(description="ONNX Runtime providers, in order.")
    cpu_model: str | None = Field(description="The CPU's model name.")
    cpu_flags: list[str] = Field(description="Its instruction-set flags (avx2, avx512_vnni, ...).")
    cores: int | None = Field(description="Logical CPUs of the machine.")
    threads: int = Field(description="Threads each model ran with.")
    memory_bytes: int | None = Field(description="The machine's memory.")
    python: str = Field(description="Python version.")
    platform: str = Field(description="Operating system and kernel.")
    libraries: dict[str, str] = Field(description="Versions keyed by distribution name.")
    gpu: str | None = Field(None, description="CUDA jobs only, as are the other `gpu_*` keys.")
    gpu_memory_bytes: int | None = Field(None, description="The GPU's memory.")
    cuda_runtime: str | None = Field(None, description="CUDA runtime version torch was built with.")
    gpu_capability: str | None = Field(None, description="CUDA compute capability (`8.9`).")


class BenchmarkSettings(_Open):
    batch_sizes: list[int] = Field(description="Batch sizes timed.")
    iterations: int = Field(description="Timed calls per model and batch size.")
    warmup: int = Field(description="Untimed calls first.")
    threads: int = Field(description="Threads each model ran with.")
    interleaved: bool = Field(description="Original and optimized timed in alternating bursts.")
    input_shapes: dict[str, list[Any]] | None = Field(
        None, description="The input shapes given in the job spec, if any."
    )
    inputs: list[dict[str, Any]] = Field(description="The inputs fed: name, dtype, shape.")


class Verdict(_Open):
    met: bool | None = Field(description="Null when the job had no constraints.")
    reasons: list[str] = Field(description="Why the budget was missed (empty when met).")
    notes: list[str] = Field(
        description="What else the numbers mean (noise, skipped measurements)."
    )


class Candidate(_Open):
    name: str = Field(description="The candidate pipeline's name.")
    steps: list[dict[str, Any]] = Field(description="Its steps, as a job spec's.")
    error: str | None = Field(None, description="Why it did not run; null when it ran.")
    met: bool | None = Field(
        None, description="It meets the job's constraints (null without constraints)."
    )
    chosen: bool = Field(False, description="It is the result.")
    size_bytes: int | None = Field(None, description="Its size on disk.")
    latency_ms_p50: dict[str, float] | None = Field(None, description="By batch size.")
    speedup: dict[str, float] | None = Field(
        None, description="Original p50 over its p50, by batch size."
    )
    cosine_min: float | None = Field(
        None, description="Worst per-sample cosine of its outputs vs the original's."
    )
    accuracy: float | None = Field(None, description="Its score on the evaluation set.")
    accuracy_drop: float | None = Field(None, description="Baseline score minus its score.")
    reasons: list[str] | None = Field(None, description="Why it does not meet the constraints.")
    wall_s: float | None = Field(None, description="Seconds spent on it.")


class StepTiming(_Open):
    op: str = Field(description="The step's op.")
    wall_s: float = Field(description="Seconds the step took in the sandbox.")


class BenchmarkTimings(_Open):
    load_s: float | None = Field(None, description="Loading the original and the result.")
    noise_control_load_s: float | None = Field(
        None, description="Loading the second copy of the original (the noise control)."
    )
    latency_s: float | None = Field(None, description="The interleaved latency runs.")
    memory_wait_s: float | None = Field(
        None,
        description="Waiting for the peak-memory probes after fidelity: they run beside it, "
        "each in a process of its own.",
    )
    fidelity_s: float | None = Field(None, description="Fidelity (and accuracy) runs.")


class Timings(_Open):
    """Where the job's wall time went, in seconds, each part measured (publishing the artifacts
    comes after the report and is not in it)."""

    queue_wait_s: float | None = Field(None, description="From submission to the claim.")
    stage_s: float | None = Field(
        None, description="Copying (and verifying) the inputs into the attempt's scratch."
    )
    sandbox_start_s: float | None = Field(
        None,
        description="From starting the sandbox child to its first step of work: the "
        "interpreter, the jail, importing the runtimes.",
    )
    prepare_s: float | None = Field(None, description="Reading the model and its signature.")
    steps_s: float | None = Field(
        None, description="All steps (or the whole `recipe: auto` search)."
    )
    steps: list[StepTiming] = Field(default_factory=list, description="Each step's own time.")
    deliver_s: float | None = Field(None, description="Writing the final model artifact.")
    benchmark_s: float | None = Field(None, description="Measuring original vs result.")
    benchmark: BenchmarkTimings = Field(
        default_factory=BenchmarkTimings, description="The parts of `benchmark_s`."
    )
    report_s: float | None = Field(None, description="Building the report.")
    child_total_s: float | None = Field(
        None, description="The sandbox child's time from its first step of work to the report."
    )


class Report(_Open):
    schema_version: Literal["1"] = Field(description="Version of this document's shape (`1`).")
    job_id: str = Field(description="The job's id.")
    model: ModelRef = Field(description="The uploaded model.")
    baseline: ModelMeasurement = Field(description="The original, measured.")
    optimized: ModelMeasurement = Field(description="The result, measured in the same run.")
    comparison: Comparison = Field(description="Ratios of the two: size, speed-up, noise.")
    fidelity: Fidelity = Field(
        description="The result's outputs vs the original's on the same inputs."
    )
    accuracy: Accuracy | None = Field(
        None, description="On the evaluation dataset, where the job gave one."
    )
    steps: list[StepRecord] = Field(description="Each step that ran (inserted conversions too).")
    environment: Environment = Field(description="Where it was measured.")
    benchmark: BenchmarkSettings = Field(description="How it was measured.")
    verdict: Verdict = Field(description="Whether the result meets the job's constraints, and why.")
    candidates: list[Candidate] | None = Field(None, description="`recipe: auto` only.")
    timings: Timings | None = Field(
        None, description="Where the job's wall time went (reports written before it: null)."
    )
