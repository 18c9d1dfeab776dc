"""Every technique of the catalog has exactly one implementation, registered by config type."""

from __future__ import annotations

from typing import Any

import pytest

from app.passes.base import PassConfig, Technique
from app.passes.registry import CATALOG
from worker.passes.base import Pass
from worker.passes.quantize import QuantizePass
from worker.passes.registry import PASSES, build_registry


@pytest.mark.parametrize("technique", CATALOG.all(), ids=lambda t: t.name)
def test_each_catalog_technique_has_its_pass(technique: Technique[Any]) -> None:
    config_cls = technique.config_cls

    pass_ = PASSES.for_config(config_cls.model_construct())

    assert pass_.technique.config_cls is config_cls
    assert pass_.name == technique.name
    assert pass_.version == technique.version


def test_implementations_equal_the_catalog() -> None:
    implemented = PASSES.config_classes()

    catalog = {t.config_cls for t in CATALOG.all()}

    assert implemented == catalog


def test_registry_refuses_a_second_implementation() -> None:
    registry = build_registry()

    with pytest.raises(ValueError, match="duplicate implementation of QuantizeConfig"):
        registry.register(QuantizePass())


def test_registry_refuses_a_pass_outside_the_catalog() -> None:
    class Stray(PassConfig):
        op: str = "stray"

    class StrayTechnique(Technique[Stray]):
        name, version, config_cls, input_formats = "stray", "0", Stray, ("onnx",)

    class StrayPass(Pass[Stray]):
        technique = StrayTechnique()

        def run(self, ctx: Any, config: Stray) -> Any:
            raise AssertionError("never run")

    with pytest.raises(ValueError, match="not in the catalog"):
        build_registry().register(StrayPass())


def test_an_unregistered_config_has_no_pass() -> None:
    with pytest.raises(KeyError):
        PASSES.for_config(PassConfig())
