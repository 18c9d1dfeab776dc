"""Every string, list, dict, id and number of a job spec is bounded (RELIABILITY.md API-08): a
hostile spec is a 422 `validation_error` whose pointer names the field in the document sent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from support import assert_problem

from app.jobs.schemas import JobCreate

MODEL = str(uuid.uuid4())
QUANTIZE = {"op": "quantize"}


def _spec(**fields: Any) -> dict[str, Any]:
    return {"model_id": MODEL, "steps": [QUANTIZE]} | fields


def _step(**fields: Any) -> dict[str, Any]:
    return _spec(steps=[fields])


CASES = {
    "long model id": (_spec(model_id="a" * 65), "/model_id"),
    "model id with a path": (_spec(model_id="../../etc/passwd"), "/model_id"),
    "model id with a NUL": (_spec(model_id="ab\u0000cd"), "/model_id"),
    "evaluation dataset id": (
        _spec(evaluation={"dataset_id": "x" * 10_000}),
        "/evaluation/dataset_id",
    ),
    "calibration dataset id": (
        _step(op="quantize", mode="static", calibration_dataset_id="a b"),
        "/steps/0/calibration_dataset_id",
    ),
    "distill dataset id": (_step(op="distill", dataset_id=""), "/steps/0/dataset_id"),
    "too many steps": (_spec(steps=[QUANTIZE] * 21), "/steps"),
    "too many excluded nodes": (
        _step(op="quantize", exclude_nodes=["n"] * 10_001),
        "/steps/0/exclude_nodes",
    ),
    "a huge node name": (
        _step(op="prune", method="magnitude", sparsity=0.5, exclude_nodes=["n" * 1025]),
        "/steps/0/exclude_nodes/0",
    ),
    "an empty node name": (
        _step(op="prune", method="channel", ratio=0.5, ignore_nodes=[""]),
        "/steps/0/ignore_nodes/0",
    ),
    "too many op types": (_step(op="quantize", op_types=["MatMul"] * 101), "/steps/0/op_types"),
    "too many fp32 op types": (
        _step(op="convert", precision="fp16", op_block_list=["Resize"] * 1001),
        "/steps/0/op_block_list",
    ),
    "a 64-bit seed": (
        _step(op="prune", method="channel", ratio=0.5, seed=2**40),
        "/steps/0/seed",
    ),
    "too many input shapes": (
        _spec(benchmark={"input_shapes": {f"in{i}": [1, 8] for i in range(257)}}),
        "/benchmark/input_shapes",
    ),
    "a shape of 9 dims": (
        _spec(benchmark={"input_shapes": {"x": [1] * 9}}),
        "/benchmark/input_shapes/x",
    ),
    "an input name of 2 KB": (
        _spec(benchmark={"input_shapes": {"x" * 2048: [1, 8]}}),
        "/benchmark/input_shapes",
    ),
    "a size budget past 2**53": (_spec(constraints={"max_size_bytes": 2**60}), "/constraints"),
}


@pytest.mark.parametrize(("spec", "pointer"), CASES.values(), ids=CASES.keys())
def test_an_unbounded_field_is_422_with_its_pointer(
    client: Any, spec: dict[str, Any], pointer: str
) -> None:
    response = client.post("/v1/jobs", json=spec)

    body = assert_problem(response, 422, "validation_error")
    pointers = [e["pointer"] for e in body["errors"]]
    assert any(p.startswith(pointer) for p in pointers), pointers


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("template", "pointer"),
    [
        ('{"constraints": {"max_latency_ms": %s}}', "/constraints/max_latency_ms"),
        ('{"constraints": {"max_abs_error": %s}}', "/constraints/max_abs_error"),
        ('{"steps": [{"op": "export", "format": "onnx", "rtol": %s}]}', "/steps/0/rtol"),
    ],
)
def test_nan_and_infinity_are_422(client: Any, literal: str, template: str, pointer: str) -> None:
    """Python's JSON parser reads these non-standard literals; they must not reach a job."""
    fields = json.loads(template % "0.5")
    raw = json.dumps(_spec(**fields)).replace("0.5", literal)

    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})

    body = assert_problem(response, 422, "validation_error")
    assert pointer in [e["pointer"] for e in body["errors"]]


def test_the_bounds_admit_what_the_server_issues() -> None:
    """Server ids are UUIDs; the worker's own test ids (`cal`, `train`) pass too."""
    for model_id in (str(uuid.uuid4()), "m", "train_01"):
        assert JobCreate.model_validate(_spec(model_id=model_id)).model_id == model_id
