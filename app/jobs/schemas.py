"""The job spec (docs/product.md, "Job spec") and the job's public shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.db.orm import JobStatus
from app.passes.base import NodeName, SpecId
from app.passes.spec import StepConfig
from app.webhooks.address import MAX_URL_LENGTH, check_syntax

Shape = Annotated[list[int], Field(max_length=8)]
MAX_INPUTS = 256  # named inputs in `benchmark.input_shapes`


class BenchmarkSpec(BaseModel):
    """How latency is measured; original and optimized run interleaved on the same inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    batch_sizes: list[int] = Field(
        default_factory=lambda: [1, 8],
        min_length=1,
        max_length=8,
        description="Batch sizes to time (each 1..1024).",
    )
    iterations: int = Field(30, ge=1, le=2000, description="Timed calls per model and batch size.")
    warmup: int = Field(3, ge=0, le=100, description="Untimed calls first.")
    time_budget_s: float = Field(
        60.0, gt=0, le=1800, description="Per batch size; at least 5 timed calls are always made."
    )
    noise_control: bool = Field(
        True,
        description="Also time a second copy of the original: how far apart two identical "
        "models measure on this machine now (speedups inside that band are noise).",
    )
    memory: bool = Field(
        True, description="Measure each model's peak RSS alone in a short-lived process."
    )
    input_shapes: dict[NodeName, Shape] | None = Field(
        None,
        max_length=MAX_INPUTS,
        description="Fill dynamic dims by input name (full shape; the batch dim is replaced), "
        'e.g. `{"input_ids": [1, 128]}`. Defaults: 128 for integer inputs, 32 for float.',
    )

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        if any(not 1 <= b <= 1024 for b in v):
            raise ValueError("each batch size must be in 1..1024")
        return sorted(set(v))

    @field_validator("input_shapes")
    @classmethod
    def _shapes(cls, v: dict[str, Shape] | None) -> dict[str, Shape] | None:
        for name, shape in (v or {}).items():
            if len(shape) > 8 or any(not 1 <= d <= 65536 for d in shape):
                raise ValueError(f"input_shapes.{name}: at most 8 dims, each in 1..65536")
        return v


class EvaluationSpec(BaseModel):
    """Accuracy (or another metric) of original and optimized on a labelled dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset_id: SpecId = Field(description="An uploaded .npz with a `labels` array.")
    metric: Literal["accuracy", "top5", "mse", "mae", "cosine"] = Field(
        "accuracy",
        description="`accuracy`/`top5` on class ids (or one-hot labels); `mse`/`mae` on target "
        "values; `cosine`: mean cosine similarity of each sample's output to its target vector.",
    )


class Constraints(BaseModel):
    """The budget the verdict is judged against."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Absolute fraction: 0.01 = one accuracy point (for `mse`/`mae`: the rise "
        "in error), judged on the `evaluation` dataset. A `keep_float: auto` step (and "
        "`recipe: auto`'s mixed-precision candidates) keeps the fewest nodes float that meet "
        "it on labelled data.",
    )
    min_speedup: float | None = Field(None, gt=0, le=1000, description="At every batch size.")
    max_size_bytes: int | None = Field(
        None, gt=0, le=2**53, description="The optimized model's size on disk, at most."
    )
    max_latency_ms: float | None = Field(
        None, gt=0, le=86_400_000, description="p50 at every batch size."
    )
    fail_if_slower: bool = Field(
        True,
        description="Not met if the result is slower than the original at any batch size, beyond "
        "the noise measured between two copies of the original (the guard; `false` accepts a "
        "slower model).",
    )
    min_cosine: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Fidelity without labels: the `cosine_mean` of every output against the "
        "original's, on the evaluation (or synthesized) inputs, at least this. Giving `min_cosine` "
        "or `max_abs_error` replaces the guard's default floor (cosine_mean and top-1 agreement "
        ">= 0.90).",
    )
    max_abs_error: float | None = Field(
        None,
        gt=0,
        le=1e30,
        description="Fidelity without labels: every output's `max_abs_error`.",
    )


AUTO_ONLY = ("objective", "calibration_dataset_id", "time_budget_s")
MODEL_ID = "3f0c8a52-6d1e-4b7a-9c2f-5e8d1a7b4c60"  # the examples' ids: what uploads answered
DATASET_ID = "9a4e2b17-0c3d-4f58-8e6a-1b7c5d2f3a90"
EVAL_ID = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
# `POST /v1/jobs` examples in OpenAPI (the `/docs` "Try it out" bodies); each is a valid spec.
JOB_EXAMPLES: dict[str, dict[str, Any]] = {
    "quantize": {
        "summary": "int8 dynamic quantization (transformers, MLPs)",
        "value": {"model_id": MODEL_ID, "steps": [{"op": "quantize", "mode": "dynamic"}]},
    },
    "cnn": {
        "summary": "Prune channels, distil, quantize static int8, with a budget",
        "value": {
            "model_id": MODEL_ID,
            "steps": [
                {"op": "prune", "method": "channel", "ratio": 0.3},
                {"op": "distill", "dataset_id": DATASET_ID, "epochs": 5},
                {
                    "op": "quantize",
                    "mode": "static",
                    "calibration_dataset_id": DATASET_ID,
                    "calibration": "minmax",
                },
                {"op": "export", "format": "onnx"},
            ],
            "benchmark": {"batch_sizes": [1, 32], "iterations": 50},
            "evaluation": {"dataset_id": EVAL_ID, "metric": "accuracy"},
            "constraints": {"max_accuracy_drop": 0.01, "min_speedup": 1.2},
        },
    },
    "auto": {
        "summary": "recipe auto: measure candidates, keep the best that meets the budget",
        "value": {
            "model_id": MODEL_ID,
            "recipe": "auto",
            "objective": "latency",
            "calibration_dataset_id": DATASET_ID,
            "evaluation": {"dataset_id": EVAL_ID, "metric": "accuracy"},
            "constraints": {"max_accuracy_drop": 0.01, "min_cosine": 0.99},
            "time_budget_s": 600,
            "callback_url": "https://ci.example.com/hooks/modelpress",
        },
    },
}


class JobCreate(BaseModel):
    """A job: which model, which steps (or `recipe: auto`), how to measure, what budget."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model_id: SpecId = Field(description="An uploaded model in status `ready`.")
    steps: list[StepConfig] | None = Field(
        None, min_length=1, max_length=20, description="Run in order. Or give `recipe`."
    )
    recipe: Literal["auto"] | None = Field(
        None,
        description="`auto`: try candidate pipelines, measure each, keep the best that meets "
        "`constraints` (or the closest, explained); every candidate is in the report.",
    )
    objective: Literal["latency", "size"] = Field(
        "latency", description="`recipe: auto` only: what 'best' means among those that qualify."
    )
    calibration_dataset_id: SpecId | None = Field(
        None,
        description="`recipe: auto` only: data for static quantization, pruning and "
        "distillation candidates (never the evaluation set).",
    )
    time_budget_s: float = Field(
        900,
        gt=0,
        le=7200,
        description="`recipe: auto` only: stop trying new candidates after this.",
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu",
        description="`cuda`: training steps (distill) and the benchmark run on the GPU of a CUDA "
        "worker (ONNX models through ONNX Runtime's CUDA provider where installed).",
    )
    benchmark: BenchmarkSpec = Field(
        default_factory=BenchmarkSpec,
        description="How latency is measured (batch sizes, iterations, input shapes); defaults "
        "to batch sizes 1 and 8.",
    )
    evaluation: EvaluationSpec | None = Field(
        None,
        description="Accuracy (or another metric) of both models on a labelled dataset; "
        "without it, only fidelity to the original's outputs is measured.",
    )
    constraints: Constraints | None = Field(
        None,
        description="The budget the verdict is judged against; without it, the guard's "
        "defaults (not slower, cosine_mean and top-1 agreement >= 0.90).",
    )
    callback_url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="Webhook: when the job ends (`succeeded`, `failed`, `cancelled`) a JSON POST "
        "goes here, signed with HMAC-SHA256 of the body in `X-ModelPress-Signature: "
        "sha256=<hex>` (with `X-ModelPress-Delivery` and `X-ModelPress-Timestamp`, both also in "
        "the signed body), retried with exponential backoff. https or http, no user info; hosts "
        "resolving to loopback, private, link-local (cloud metadata), CGNAT, multicast or "
        "unspecified addresses are refused unless the operator sets "
        "MODELPRESS_WEBHOOK_ALLOW_PRIVATE. Redirects are not followed.",
    )

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, v: str | None) -> str | None:
        return None if v is None else check_syntax(v)

    @model_validator(mode="after")
    def _steps_or_recipe(self) -> JobCreate:
        if (self.steps is None) == (self.recipe is None):
            raise ValueError("give exactly one of `steps` and `recipe`")
        if self.steps is not None:
            # Compared with the defaults, not `model_fields_set`: a stored spec has every field.
            defaults = {k: JobCreate.model_fields[k].default for k in AUTO_ONLY}
            given = sorted(k for k in AUTO_ONLY if getattr(self, k) != defaults[k])
            if given:
                raise ValueError(f"{', '.join(given)} only apply to `recipe: auto`")
        return self


def accuracy_drop_target(spec: JobCreate) -> float | None:
    """`constraints.max_accuracy_drop` where the job has an `evaluation` to judge it on."""
    if getattr(spec, "evaluation", None) is None or spec.constraints is None:
        return None
    return spec.constraints.max_accuracy_drop


def has_fidelity_target(spec: JobCreate) -> bool:
    """A target `keep_float: auto` can meet: `min_cosine`, or a judged accuracy drop."""
    cosine = spec.constraints.min_cosine if spec.constraints is not None else None
    return cosine is not None or accuracy_drop_target(spec) is not None


class ArtifactRead(BaseModel):
    """One stored output of a job, downloadable at `/v1/jobs/{id}/artifacts/{name}`."""

    model_config = ConfigDict(from_attributes=True)

    name: str = Field(description="File name, unique in the job (`model.onnx`, `report.json`).")
    kind: str = Field(description="`model` (exactly one), `report`, `manifest`, ...")
    media_type: str = Field(description="The Content-Type it is served with.")
    size_bytes: int = Field(description="Size of the stored file.")
    sha256: str = Field(description="Hex sha256 of the bytes (checked before each download).")


class JobRead(BaseModel):
    """A job as the API shows it."""

    id: str = Field(description="The job's id (a UUID).")
    model_id: str = Field(description="The uploaded model it optimizes.")
    status: JobStatus = Field(
        description="`queued`, `running`, `succeeded`, `failed` or `cancelled` (the last "
        "three are terminal)."
    )
    cancel_requested: bool = Field(
        description="A cancel was asked for; a running job stops within seconds."
    )
    progress: dict[str, Any] = Field(
        description="`fraction` (0 to 1), `message`, and while running the current `step` "
        "(its index)."
    )
    error: dict[str, Any] | None = Field(None, description="A problem, when `failed`.")
    attempt: int = Field(
        description="How many times a worker claimed it (a lost worker's job runs again)."
    )
    spec: dict[str, Any] = Field(
        description="The job spec as accepted, with every default filled in."
    )
    artifacts: list[ArtifactRead] = Field(
        description="What it produced so far; exactly one `kind: model` once `succeeded`."
    )
    created_at: datetime = Field(description="When it was submitted.")
    started_at: datetime | None = Field(description="When a worker first claimed it.")
    finished_at: datetime | None = Field(description="When it reached a terminal status.")
    updated_at: datetime = Field(description="Its last change (status, progress).")


def dataset_refs(spec: Any, pointer: str = "") -> list[tuple[str, str]]:
    """Every `(json pointer, dataset id)` in a spec (`dataset_id`, `calibration_dataset_id`...)."""
    refs: list[tuple[str, str]] = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key.endswith("dataset_id") and isinstance(value, str):
                refs.append((f"{pointer}/{key}", value))
            else:
                refs.extend(dataset_refs(value, f"{pointer}/{key}"))
    elif isinstance(spec, list):
        for index, value in enumerate(spec):
            refs.extend(dataset_refs(value, f"{pointer}/{index}"))
    return refs
