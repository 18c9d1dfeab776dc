"""The job spec's step union, implicit conversions, and the chaining check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Discriminator, Tag

from app.passes.base import ModelInfo, PassConfig
from app.passes.convert import ConvertConfig
from app.passes.distill import DistillConfig
from app.passes.export import ExportConfig
from app.passes.optimize import OptimizeConfig
from app.passes.prune_channel import PruneChannelConfig, PruneNeuronConfig
from app.passes.prune_magnitude import PruneMagnitudeConfig
from app.passes.quantize import QuantizeConfig
from app.passes.registry import CATALOG

TORCH_FORMATS = ("pt2", "torchscript")


def step_tag(step: Any) -> str | None:
    """The pass a step is for: `op`, or `op.method` for families (`prune.magnitude`)."""
    get = step.get if isinstance(step, dict) else lambda key: getattr(step, key, None)
    op = get("op")
    return f"{op}.{get('method')}" if op == "prune" else op


# Written out (not built from the registry) so that type checkers and OpenAPI see it;
# tests/passes/test_spec.py asserts it equals the registry. A callable discriminator rather than
# a nested op -> method union: pydantic writes a nested union's mapping as invalid OpenAPI.
StepConfig = Annotated[
    Annotated[QuantizeConfig, Tag("quantize")]
    | Annotated[OptimizeConfig, Tag("optimize")]
    | Annotated[ExportConfig, Tag("export")]
    | Annotated[DistillConfig, Tag("distill")]
    | Annotated[ConvertConfig, Tag("convert")]
    | Annotated[PruneMagnitudeConfig, Tag("prune.magnitude")]
    | Annotated[PruneChannelConfig, Tag("prune.channel")]
    | Annotated[PruneNeuronConfig, Tag("prune.neuron")],
    Discriminator(step_tag),
]
STEP_CONFIG_TYPES: tuple[type[PassConfig], ...] = (
    QuantizeConfig,
    OptimizeConfig,
    ExportConfig,
    DistillConfig,
    ConvertConfig,
    PruneMagnitudeConfig,
    PruneChannelConfig,
    PruneNeuronConfig,
)


@dataclass(frozen=True)
class PlannedStep:
    config: Any
    user_index: int  # the spec step it belongs to (an implicit conversion precedes that step)
    implicit: bool = False


def plan(steps: list[Any], model_format: str) -> list[PlannedStep]:
    """The steps to run: the user's, plus an ONNX export before an ONNX-only step that gets a
    PyTorch program (e.g. `quantize` on a `.pt2` upload)."""
    planned: list[PlannedStep] = []
    fmt = model_format
    for index, step in enumerate(steps):
        technique = CATALOG.for_config(step)
        if (
            fmt not in technique.input_formats
            and fmt in TORCH_FORMATS
            and "onnx" in technique.input_formats
        ):
            planned.append(PlannedStep(ExportConfig(op="export", format="onnx"), index, True))
            fmt = "onnx"
        planned.append(PlannedStep(step, index))
        fmt = technique.output_format_for(step, fmt)
    return planned


def check_chain(steps: list[Any], model: ModelInfo) -> list[str]:
    """Check every planned step against the format the previous one hands over.

    Returns:
        The format after each planned step.

    Raises:
        SpecInvalid: with a JSON pointer (`/steps/<i>`) at the first step that cannot run.
    """
    formats: list[str] = []
    current = model
    for planned in plan(steps, model.format):
        technique = CATALOG.for_config(planned.config)
        technique.check(planned.config, current, f"/steps/{planned.user_index}")
        produced = technique.output_format_for(planned.config, current.format)
        formats.append(produced)
        current = ModelInfo(produced, current.inputs, current.outputs)
    return formats
