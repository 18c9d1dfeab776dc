"""The `convert` technique's API-side check (no model library needed)."""

from __future__ import annotations

import pytest

from app.core.errors import SpecInvalid
from app.passes.base import ModelInfo
from app.passes.convert import ConvertConfig, ConvertTechnique


def test_check_refuses_bf16_with_bf16_io() -> None:
    config = ConvertConfig(op="convert", precision="bf16", keep_io_types=False)

    with pytest.raises(SpecInvalid) as refused:
        ConvertTechnique().check(config, ModelInfo("onnx"), "/steps/0")

    assert refused.value.extra["pointer"] == "/steps/0/keep_io_types"


def test_check_refuses_a_torch_program() -> None:
    config = ConvertConfig(op="convert", precision="fp16")

    with pytest.raises(SpecInvalid):
        ConvertTechnique().check(config, ModelInfo("pt2"), "/steps/0")
