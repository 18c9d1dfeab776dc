"""MODELPRESS_TENANT_MAX_ACTIVE_JOBS: queued plus running jobs per tenant (RELIABILITY.md §4.2)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from support import assert_problem

from app.core.config import get_settings
from app.db.orm import Job
from app.db.session import session_scope


@pytest.fixture
def limit_two(client: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MODELPRESS_TENANT_MAX_ACTIVE_JOBS", "2")
    get_settings.cache_clear()
    return client


def _submit(client: Any, model_id: str, **headers: str) -> Any:
    spec = {"model_id": model_id, "steps": [{"op": "quantize"}]}
    return client.post("/v1/jobs", json=spec, headers=headers)


def test_a_job_over_the_limit_is_429_with_retry_after(limit_two: Any, model_id: str) -> None:
    assert [_submit(limit_two, model_id).status_code for _ in range(2)] == [202, 202]

    response = _submit(limit_two, model_id)

    body = assert_problem(response, 429, "too_many_active_jobs")
    assert int(response.headers["retry-after"]) > 0
    assert "MODELPRESS_TENANT_MAX_ACTIVE_JOBS=2" in body["detail"]


def test_running_jobs_count_and_finished_ones_do_not(
    limit_two: Any, env: dict[str, str], model_id: str
) -> None:
    first = _submit(limit_two, model_id).json()["id"]
    _submit(limit_two, model_id)
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(Job).values(status="running"))
    assert _submit(limit_two, model_id).status_code == 429
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(Job).where(Job.id == first).values(status="succeeded"))

    response = _submit(limit_two, model_id)

    assert response.status_code == 202, response.text


def test_a_cancelled_job_frees_its_place(limit_two: Any, model_id: str) -> None:
    first = _submit(limit_two, model_id).json()["id"]
    _submit(limit_two, model_id)
    limit_two.post(f"/v1/jobs/{first}/cancel")

    response = _submit(limit_two, model_id)

    assert response.status_code == 202, response.text


def test_an_idempotent_replay_at_the_limit_returns_the_first_job(
    limit_two: Any, model_id: str
) -> None:
    first = _submit(limit_two, model_id, **{"Idempotency-Key": "k1"}).json()["id"]
    _submit(limit_two, model_id)

    response = _submit(limit_two, model_id, **{"Idempotency-Key": "k1"})

    assert response.status_code == 202, response.text
    assert response.json()["id"] == first


def test_zero_turns_the_limit_off(client: Any, model_id: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("MODELPRESS_TENANT_MAX_ACTIVE_JOBS", "0")
    get_settings.cache_clear()

    statuses = {_submit(client, model_id).status_code for _ in range(25)}

    assert statuses == {202}
