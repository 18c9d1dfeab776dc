"""The catalog: an explicit list of the built-in techniques, duplicates refused."""

from __future__ import annotations

from typing import Any

from app.passes.base import PassConfig, Technique
from app.passes.convert import ConvertTechnique
from app.passes.distill import DistillTechnique
from app.passes.export import ExportTechnique
from app.passes.optimize import OptimizeTechnique
from app.passes.prune_channel import PruneChannelTechnique, PruneNeuronTechnique
from app.passes.prune_magnitude import PruneMagnitudeTechnique
from app.passes.quantize import QuantizeTechnique


class Catalog:
    """Techniques by name (`op`, or `op.method` for families such as prune)."""

    def __init__(self) -> None:
        self._techniques: dict[str, Technique[Any]] = {}

    def register(self, technique: Technique[Any]) -> Technique[Any]:
        """Add a technique; a second one of the same name or config is a programming error."""
        if technique.name in self._techniques:
            raise ValueError(f"duplicate technique name: {technique.name}")
        if any(t.config_cls is technique.config_cls for t in self._techniques.values()):
            raise ValueError(f"duplicate config class: {technique.config_cls.__name__}")
        self._techniques[technique.name] = technique
        return technique

    def for_config(self, config: PassConfig) -> Technique[Any]:
        """The technique a given step config belongs to."""
        technique = self.for_config_cls(type(config))
        if technique is None:
            raise KeyError(type(config).__name__)
        return technique

    def for_config_cls(self, config_cls: type[PassConfig]) -> Technique[Any] | None:
        """The technique whose config class this is, or None."""
        return next((t for t in self._techniques.values() if t.config_cls is config_cls), None)

    def names(self) -> list[str]:
        return sorted(self._techniques)

    def all(self) -> list[Technique[Any]]:
        return [self._techniques[n] for n in self.names()]


def build_catalog() -> Catalog:
    """The built-in techniques; a new one is added to this list, not discovered."""
    catalog = Catalog()
    builtins = (
        QuantizeTechnique(),
        OptimizeTechnique(),
        ExportTechnique(),
        DistillTechnique(),
        ConvertTechnique(),
        PruneMagnitudeTechnique(),
        PruneChannelTechnique(),
        PruneNeuronTechnique(),
    )
    for technique in builtins:
        catalog.register(technique)
    return catalog


CATALOG = build_catalog()
