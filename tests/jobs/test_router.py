"""`/v1/jobs`: submission checks, idempotency, cancellation, reads. No worker runs here: models
are uploaded through the API and marked `ready` directly in the database."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update
from support import assert_problem

from app.db.orm import MlModel
from app.db.session import session_scope

INPUTS = [{"name": "input", "dtype": "float32", "shape": ["batch", 32]}]
OUTPUTS = [{"name": "output", "dtype": "float32", "shape": ["batch", 10]}]


def _upload(client: Any, path: Path) -> str:
    response = client.post("/v1/models", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _mark_ready(env: dict[str, str], model_id: str) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(
            update(MlModel)
            .where(MlModel.id == model_id)
            .values(status="ready", inputs=INPUTS, outputs=OUTPUTS, parameter_count=2762)
        )


@pytest.fixture
def model_id(client: Any, env: dict[str, str], mlp_onnx: Path) -> str:
    """An ONNX model in status `ready`."""
    model_id = _upload(client, mlp_onnx)
    _mark_ready(env, model_id)
    return model_id


def _spec(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"model_id": model_id, "steps": [{"op": "quantize", "mode": "dynamic"}], **extra}


def _pointers(body: dict[str, Any]) -> list[str]:
    return [e["pointer"] for e in body.get("errors", [])]


# ---------------------------------------------------------------- submission


def test_submit_is_202_queued_with_location(client: Any, model_id: str) -> None:
    response = client.post("/v1/jobs", json=_spec(model_id))

    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == "queued"
    assert body["model_id"] == model_id
    assert body["cancel_requested"] is False
    assert body["artifacts"] == []


def test_submitted_job_is_readable_at_its_location(client: Any, model_id: str) -> None:
    submitted = client.post("/v1/jobs", json=_spec(model_id))

    response = client.get(submitted.headers["location"])

    assert response.status_code == 200
    assert response.json()["id"] == submitted.json()["id"]
    assert response.json()["spec"]["steps"][0]["op"] == "quantize"


def test_unknown_top_level_field_is_422_with_pointer(client: Any, model_id: str) -> None:
    response = client.post("/v1/jobs", json=_spec(model_id, colour="blue"))

    body = assert_problem(response, 422, "validation_error")
    assert "/colour" in _pointers(body)


def test_unknown_op_is_422(client: Any, model_id: str) -> None:
    spec = {"model_id": model_id, "steps": [{"op": "transmogrify"}]}

    response = client.post("/v1/jobs", json=spec)

    body = assert_problem(response, 422, "validation_error")
    assert any(p.startswith("/steps/0") for p in _pointers(body))


def test_unknown_step_field_is_422(client: Any, model_id: str) -> None:
    spec = {"model_id": model_id, "steps": [{"op": "quantize", "bits": 3}]}

    response = client.post("/v1/jobs", json=spec)

    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize("steps", [[], None], ids=["empty", "missing"])
def test_steps_are_required(client: Any, model_id: str, steps: list | None) -> None:
    spec = {"model_id": model_id} | ({} if steps is None else {"steps": steps})

    response = client.post("/v1/jobs", json=spec)

    assert_problem(response, 422, "validation_error")


def test_model_not_ready_is_spec_invalid(client: Any, mlp_onnx: Path) -> None:
    validating = _upload(client, mlp_onnx)

    response = client.post("/v1/jobs", json=_spec(validating))

    body = assert_problem(response, 422, "spec_invalid")
    assert body["pointer"] == "/model_id"


def test_missing_model_is_spec_invalid(client: Any) -> None:
    response = client.post("/v1/jobs", json=_spec(str(uuid.uuid4())))

    body = assert_problem(response, 422, "spec_invalid")
    assert body["pointer"] == "/model_id"


def test_keep_float_auto_without_min_cosine_is_spec_invalid(client: Any, model_id: str) -> None:
    spec = _spec(model_id, steps=[{"op": "quantize", "keep_float": "auto"}])

    response = client.post("/v1/jobs", json=spec)

    body = assert_problem(response, 422, "spec_invalid")
    assert body["pointer"] == "/steps/0/keep_float"
    assert "min_cosine" in body["detail"]


def test_keep_float_auto_with_min_cosine_is_queued(client: Any, model_id: str) -> None:
    spec = _spec(
        model_id,
        steps=[{"op": "quantize", "keep_float": "auto"}],
        constraints={"min_cosine": 0.995},
    )

    response = client.post("/v1/jobs", json=spec)

    assert response.status_code == 202, response.text


def test_keep_float_auto_with_max_accuracy_drop_needs_an_evaluation(
    client: Any, model_id: str
) -> None:
    steps = [{"op": "quantize", "keep_float": "auto"}]
    constraints = {"max_accuracy_drop": 0.01}

    without = client.post("/v1/jobs", json=_spec(model_id, steps=steps, constraints=constraints))
    labelled = _dataset(client, input=np.zeros((4, 32), np.float32), labels=np.zeros(4, np.int64))
    spec = _spec(
        model_id, steps=steps, constraints=constraints, evaluation={"dataset_id": labelled}
    )
    with_evaluation = client.post("/v1/jobs", json=spec)

    body = assert_problem(without, 422, "spec_invalid")
    assert body["pointer"] == "/steps/0/keep_float"
    assert "max_accuracy_drop" in body["detail"] and "evaluation" in body["detail"]
    assert with_evaluation.status_code == 202, with_evaluation.text


def _dataset(client: Any, **arrays: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    response = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_unknown_evaluation_dataset_is_spec_invalid(client: Any, model_id: str) -> None:
    spec = _spec(model_id, evaluation={"dataset_id": str(uuid.uuid4())})

    response = client.post("/v1/jobs", json=spec)

    body = assert_problem(response, 422, "spec_invalid")
    assert body["pointer"] == "/evaluation/dataset_id"


@pytest.mark.parametrize(
    "field",
    [
        {"status": "succeeded"},
        {"tenant_id": str(uuid.uuid4())},
        {"attempt": 7},
        {"artifact_path": "/etc/passwd"},
        {"cancel_requested": True},
    ],
    ids=lambda f: next(iter(f)),
)
def test_mass_assignment_is_refused(client: Any, model_id: str, field: dict[str, Any]) -> None:
    """API-04: server-owned fields cannot be set by the client."""
    response = client.post("/v1/jobs", json=_spec(model_id, **field))

    body = assert_problem(response, 422, "validation_error")
    assert f"/{next(iter(field))}" in _pointers(body)
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    "extra",
    [
        '"benchmark": {"batch_sizes": [0]}',
        '"benchmark": {"batch_sizes": [1, 100000]}',
        '"benchmark": {"batch_sizes": []}',
        '"benchmark": {"iterations": 0}',
        '"benchmark": {"iterations": -5}',
        '"benchmark": {"iterations": 1e308}',
        '"benchmark": {"time_budget_s": NaN}',
        '"benchmark": {"time_budget_s": Infinity}',
        '"benchmark": {"time_budget_s": -1}',
        '"benchmark": {"input_shapes": {"input": [1, 0]}}',
        '"constraints": {"max_accuracy_drop": 1.5}',
        '"constraints": {"max_accuracy_drop": NaN}',
        '"constraints": {"min_speedup": -Infinity}',
        '"device": "tpu"',
    ],
)
def test_out_of_range_numbers_are_422(client: Any, model_id: str, extra: str) -> None:
    """API-08: edge values are refused with 422, never accepted and never a 500."""
    raw = f'{{"model_id": "{model_id}", "steps": [{{"op": "quantize"}}], {extra}}}'

    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})

    assert_problem(response, 422, "validation_error")


# ---------------------------------------------------------------- idempotency (API-15)


def test_same_idempotency_key_and_body_is_one_job(client: Any, model_id: str) -> None:
    headers = {"Idempotency-Key": "build-1234"}

    first = client.post("/v1/jobs", json=_spec(model_id), headers=headers)
    second = client.post("/v1/jobs", json=_spec(model_id), headers=headers)

    assert first.status_code == 202 and second.status_code in (200, 202)
    assert first.json()["id"] == second.json()["id"]
    assert [j["id"] for j in client.get("/v1/jobs").json()["items"]] == [first.json()["id"]]


def test_same_idempotency_key_with_other_body_is_409(client: Any, model_id: str) -> None:
    headers = {"Idempotency-Key": "build-1234"}
    client.post("/v1/jobs", json=_spec(model_id), headers=headers)
    other = {"model_id": model_id, "steps": [{"op": "optimize"}]}

    response = client.post("/v1/jobs", json=other, headers=headers)

    assert_problem(response, 409, "idempotency_conflict")
    assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_without_idempotency_key_each_post_is_a_new_job(client: Any, model_id: str) -> None:
    first = client.post("/v1/jobs", json=_spec(model_id)).json()

    second = client.post("/v1/jobs", json=_spec(model_id)).json()

    assert first["id"] != second["id"]


def test_idempotency_key_over_255_chars_is_422(client: Any, model_id: str) -> None:
    response = client.post("/v1/jobs", json=_spec(model_id), headers={"Idempotency-Key": "k" * 256})

    assert_problem(response, 422, "validation_error")


def test_non_json_body_is_422(client: Any) -> None:
    response = client.post(
        "/v1/jobs", content=json.dumps({"a": 1})[:-1], headers={"content-type": "application/json"}
    )

    assert_problem(response, 422, "validation_error")
