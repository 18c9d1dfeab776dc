"""The job spec's step union and the chaining check (formats fit from one step to the next)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from app.passes.base import ModelInfo, PassConfig
from app.passes.optimize import OptimizeConfig
from app.passes.quantize import QuantizeConfig
from app.passes.registry import REGISTRY

# Written out (not built from the registry) so that type checkers and OpenAPI see it;
# tests/passes/test_spec.py asserts it equals the registry.
StepConfig = Annotated[QuantizeConfig | OptimizeConfig, Field(discriminator="op")]
STEP_CONFIG_TYPES: tuple[type[PassConfig], ...] = (QuantizeConfig, OptimizeConfig)


def check_chain(steps: list[Any], model: ModelInfo) -> list[str]:
    """Check every step against the format the previous one hands over.

    Returns:
        The format after each step.

    Raises:
        SpecInvalid: with a JSON pointer (`/steps/<i>`) at the first step that cannot run.
    """
    formats: list[str] = []
    current = model
    for index, step in enumerate(steps):
        pass_ = REGISTRY.for_config(step)
        pass_.check(step, current, f"/steps/{index}")
        produced = pass_.output_format_for(step, current.format)
        formats.append(produced)
        current = ModelInfo(produced, current.inputs, current.outputs)
    return formats
