"""The implementations of the catalog's techniques, by config type: an explicit list."""

from __future__ import annotations

from typing import Any

from app.passes.base import PassConfig
from app.passes.registry import CATALOG
from worker.passes.base import Pass
from worker.passes.convert import ConvertPass
from worker.passes.distill import DistillPass
from worker.passes.export import ExportPass
from worker.passes.optimize import OptimizePass
from worker.passes.prune_channel import PruneChannelPass, PruneNeuronPass
from worker.passes.prune_magnitude import PruneMagnitudePass
from worker.passes.quantize import QuantizePass


class PassRegistry:
    """One implementation per catalog config class; a second one is a programming error."""

    def __init__(self) -> None:
        self._passes: dict[type[PassConfig], Pass[Any]] = {}

    def register(self, pass_: Pass[Any]) -> Pass[Any]:
        config_cls = pass_.technique.config_cls
        if config_cls in self._passes:
            raise ValueError(f"duplicate implementation of {config_cls.__name__}")
        if CATALOG.for_config_cls(config_cls) is None:
            raise ValueError(f"{config_cls.__name__} is not in the catalog")
        self._passes[config_cls] = pass_
        return pass_

    def for_config(self, config: PassConfig) -> Pass[Any]:
        """The pass that runs a given step config."""
        return self._passes[type(config)]

    def config_classes(self) -> set[type[PassConfig]]:
        return set(self._passes)


def build_registry() -> PassRegistry:
    """The built-in passes; a new technique's pass is added to this list, not discovered."""
    registry = PassRegistry()
    builtins = (
        QuantizePass(),
        OptimizePass(),
        ExportPass(),
        DistillPass(),
        ConvertPass(),
        PruneMagnitudePass(),
        PruneChannelPass(),
        PruneNeuronPass(),
    )
    for pass_ in builtins:
        registry.register(pass_)
    return registry


PASSES = build_registry()
