"""The step union, the catalog and the chaining check (API side, no torch needed)."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from app.core.errors import SpecInvalid
from app.passes.base import ModelInfo, PassConfig, Technique
from app.passes.export import ExportConfig
from app.passes.optimize import OptimizeConfig
from app.passes.quantize import QuantizeConfig, QuantizeTechnique
from app.passes.registry import CATALOG, build_catalog
from app.passes.spec import STEP_CONFIG_TYPES, StepConfig, check_chain

CONFIGS = [p.config_cls for p in CATALOG.all()]


def _op_of(config_cls: type[PassConfig]) -> str:
    return typing.get_args(config_cls.model_fields["op"].annotation)[0]


def _minimal(config_cls: type[PassConfig]) -> dict[str, Any]:
    """The smallest valid step of a config: `op` and the first choice of each required literal."""
    data: dict[str, Any] = {"op": _op_of(config_cls)}
    for name, info in config_cls.model_fields.items():
        if name != "op" and info.is_required():
            choices = typing.get_args(info.annotation)
            data[name] = choices[0] if choices else SAMPLE_VALUES[info.annotation]
    return data


SAMPLE_VALUES: dict[Any, Any] = {str: "some-dataset-id", float: 0.5, int: 1}


def test_step_config_types_equal_the_catalog() -> None:
    registered = [p.config_cls for p in CATALOG.all()]

    declared = list(STEP_CONFIG_TYPES)

    assert sorted(declared, key=str) == sorted(registered, key=str)
    assert len(set(registered)) == len(CATALOG.names())


def test_step_config_union_equals_the_catalog() -> None:
    union, _discriminator = typing.get_args(StepConfig)

    members = {typing.get_args(tagged)[0] for tagged in typing.get_args(union)}

    assert members == {p.config_cls for p in CATALOG.all()}


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_union_dispatches_each_op_to_its_technique(config_cls: type[PassConfig]) -> None:
    step = TypeAdapter(StepConfig).validate_python(_minimal(config_cls))

    technique = CATALOG.for_config(step)

    assert type(step) is config_cls
    assert technique.config_cls is config_cls


def test_catalog_refuses_a_duplicate_name() -> None:
    catalog = build_catalog()

    with pytest.raises(ValueError, match="duplicate technique name: quantize"):
        catalog.register(QuantizeTechnique())

    assert catalog.names() == CATALOG.names()


def test_catalog_refuses_a_different_technique_under_a_taken_name() -> None:
    class Impostor(Technique[OptimizeConfig]):
        name = "optimize"
        version = "0"
        config_cls = OptimizeConfig
        input_formats = ("onnx",)

    catalog = build_catalog()

    with pytest.raises(ValueError, match="duplicate"):
        catalog.register(Impostor())


def test_check_chain_accepts_onnx_steps() -> None:
    steps = [
        QuantizeConfig(op="quantize"),
        OptimizeConfig(op="optimize"),
        ExportConfig(op="export", format="onnx"),
    ]

    formats = check_chain(steps, ModelInfo(format="onnx"))

    assert formats == ["onnx", "onnx", "onnx"]


def test_check_chain_points_at_the_step_that_cannot_take_the_format() -> None:
    steps = [QuantizeConfig(op="quantize"), ExportConfig(op="export", format="pt2")]

    with pytest.raises(SpecInvalid) as caught:
        check_chain(steps, ModelInfo(format="onnx"))

    problem = caught.value.to_problem()
    assert problem["pointer"] == "/steps/1"
    assert problem["code"] == "spec_invalid"
    assert problem["status"] == 422


def test_check_chain_refuses_what_a_torchscript_model_cannot_become() -> None:
    steps = [ExportConfig(op="export", format="pt2")]

    with pytest.raises(SpecInvalid) as caught:
        check_chain(steps, ModelInfo(format="torchscript"))

    assert caught.value.to_problem()["pointer"] == "/steps/0"
    assert "torchscript" in caught.value.detail


def test_check_chain_exports_a_torchscript_model_before_an_onnx_step() -> None:
    steps = [QuantizeConfig(op="quantize")]

    formats = check_chain(steps, ModelInfo(format="torchscript"))

    assert formats == ["onnx", "onnx"]


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_pass_refuses_a_format_it_does_not_take(config_cls: type[PassConfig]) -> None:
    steps = [config_cls.model_validate(_minimal(config_cls))]

    with pytest.raises(SpecInvalid) as caught:
        check_chain(steps, ModelInfo(format="tvm"))

    problem = caught.value.to_problem()
    assert problem["pointer"] == "/steps/0"
    assert "tvm" in problem["detail"]


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_config_refuses_an_unknown_field(config_cls: type[PassConfig]) -> None:
    data = {**_minimal(config_cls), "no_such_field": 1}

    with pytest.raises(ValidationError) as caught:
        config_cls.model_validate(data)

    assert [e["type"] for e in caught.value.errors()] == ["extra_forbidden"]
    assert config_cls.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_config_is_immutable(config_cls: type[PassConfig]) -> None:
    config = config_cls.model_validate(_minimal(config_cls))

    with pytest.raises(ValidationError):
        config.op = "other"  # type: ignore[misc]

    assert config.op == _op_of(config_cls)


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_field_has_a_description(config_cls: type[PassConfig]) -> None:
    fields = config_cls.model_fields

    missing = [name for name, info in fields.items() if not (info.description or "").strip()]

    assert missing == []


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_descriptions_reach_the_json_schema(config_cls: type[PassConfig]) -> None:
    schema = config_cls.model_json_schema()

    properties = schema["properties"]

    assert set(properties) == set(config_cls.model_fields)
    assert all(prop.get("description") for prop in properties.values())
