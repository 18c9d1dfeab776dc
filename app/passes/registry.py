"""The pass registry: an explicit list of built-in passes, duplicates refused."""

from __future__ import annotations

from typing import Any

from app.passes.base import Pass, PassConfig


class PassRegistry:
    """Passes by name (`op`, or `op.method` for families such as prune)."""

    def __init__(self) -> None:
        self._passes: dict[str, Pass[Any]] = {}

    def register(self, pass_: Pass[Any]) -> Pass[Any]:
        """Add a pass; a second pass of the same name is a programming error."""
        if pass_.name in self._passes:
            raise ValueError(f"duplicate pass name: {pass_.name}")
        self._passes[pass_.name] = pass_
        return pass_

    def for_config(self, config: PassConfig) -> Pass[Any]:
        """The pass that runs a given step config."""
        for pass_ in self._passes.values():
            if type(config) is pass_.config_cls:
                return pass_
        raise KeyError(type(config).__name__)

    def names(self) -> list[str]:
        return sorted(self._passes)

    def all(self) -> list[Pass[Any]]:
        return [self._passes[n] for n in self.names()]


def build_registry() -> PassRegistry:
    """The built-in passes; new techniques are added to this list, not discovered."""
    from app.passes.convert import ConvertPass
    from app.passes.distill import DistillPass
    from app.passes.export import ExportPass
    from app.passes.optimize import OptimizePass
    from app.passes.prune_channel import PruneChannelPass, PruneNeuronPass
    from app.passes.prune_magnitude import PruneMagnitudePass
    from app.passes.quantize import QuantizePass

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


REGISTRY = build_registry()
