"""The `quantize` technique's API-side check (no model library needed)."""

from __future__ import annotations

import pytest

from app.core.errors import SpecInvalid
from app.passes.base import ModelInfo
from app.passes.quantize import QuantizeConfig, QuantizeTechnique


def test_check_refuses_static_without_calibration_dataset() -> None:
    config = QuantizeConfig(op="quantize", mode="static")

    with pytest.raises(SpecInvalid) as refused:
        QuantizeTechnique().check(config, ModelInfo("onnx"), "/steps/2")

    assert refused.value.extra["pointer"] == "/steps/2"
    assert "calibration_dataset_id" in refused.value.detail


def test_check_refuses_dynamic_with_calibration_dataset() -> None:
    config = QuantizeConfig(op="quantize", mode="dynamic", calibration_dataset_id="cal")

    with pytest.raises(SpecInvalid) as refused:
        QuantizeTechnique().check(config, ModelInfo("onnx"), "/steps/0")

    assert refused.value.extra["pointer"] == "/steps/0"
    assert "calibration_dataset_id" in refused.value.detail


def test_check_refuses_static_only_op_types_in_dynamic_mode() -> None:
    config = QuantizeConfig(op="quantize", op_types=["Add"])

    with pytest.raises(SpecInvalid) as refused:
        QuantizeTechnique().check(config, ModelInfo("onnx"), "/steps/1")

    assert refused.value.extra["pointer"] == "/steps/1"


def test_check_accepts_static_with_calibration_dataset() -> None:
    config = QuantizeConfig(op="quantize", mode="static", calibration_dataset_id="cal")

    QuantizeTechnique().check(config, ModelInfo("onnx"), "/steps/0")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "dynamic", "bits": 8}, "Only `mode: weight_only` takes `bits`"),
        ({"mode": "static", "calibration_dataset_id": "c", "algorithm": "hqq"}, "`algorithm`"),
        ({"mode": "weight_only", "calibration": "entropy"}, "Only `mode: static` takes"),
        ({"mode": "weight_only", "calibration_dataset_id": "c"}, "needs no calibration"),
        ({"mode": "weight_only", "algorithm": "gptq"}, "`algorithm: gptq` needs"),
        ({"mode": "weight_only", "block_size": 48}, "power of two"),
        ({"mode": "weight_only", "op_types": ["Conv"]}, "cannot quantize op types ['Conv']"),
        ({"mode": "dynamic", "head_bits": 4}, "Only `mode: weight_only` takes `head_bits`"),
        ({"mode": "weight_only", "bits": 8, "head_bits": 4}, "must be at least `bits` (8)"),
    ],
)
def test_check_refuses_fields_of_another_mode(fields: dict[str, object], message: str) -> None:
    config = QuantizeConfig(op="quantize", **fields)

    with pytest.raises(SpecInvalid) as refused:
        QuantizeTechnique().check(config, ModelInfo("onnx"), "/steps/0")

    assert message in refused.value.detail


def test_check_accepts_gptq_with_calibration_data() -> None:
    config = QuantizeConfig(
        op="quantize", mode="weight_only", algorithm="gptq", calibration_dataset_id="c"
    )

    QuantizeTechnique().check(config, ModelInfo("onnx"), "/steps/0")
