"""Deleting jobs and retention: what goes, what stays as a tombstone (410), what a live job keeps.
Real databases (SQLite and Postgres), real files, the housekeeping entry point of the scheduler."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, update
from support import assert_problem

from app.core.config import get_settings
from app.core.storage import blob_key, get_storage
from app.db.base import utcnow
from app.db.orm import Dataset, Job, JobEvent, MlModel
from app.db.session import session_scope
from app.retention import service as retention


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.setenv("MODELPRESS_BLOB_GRACE_SECONDS", "0")
    get_settings.cache_clear()


@pytest.fixture
def retention_days(monkeypatch: pytest.MonkeyPatch, no_grace: None) -> int:
    monkeypatch.setenv("MODELPRESS_RETENTION_DAYS", "7")
    get_settings.cache_clear()
    return 7


def _finish(job_id: str, days_ago: float = 0, status: str = "succeeded") -> None:
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=status, finished_at=utcnow() - timedelta(days=days_ago))
        )


def _age_upload(kind: type[MlModel] | type[Dataset], object_id: str, days: float) -> None:
    with session_scope() as session:
        session.execute(
            update(kind)
            .where(kind.id == object_id)
            .values(created_at=utcnow() - timedelta(days=days))
        )


def _expire() -> retention.Expired:
    with session_scope() as session:
        return retention.expire(session, get_storage(), get_settings())


def _stored(sha256: str) -> bool:
    return (get_storage().root / blob_key(sha256)).is_file()


def _dataset(client: Any) -> dict[str, Any]:
    buffer = io.BytesIO()
    np.savez(buffer, input=np.ones((4, 32), dtype=np.float32))
    response = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return dict(response.json())


# ---------------------------------------------------------------- DELETE /v1/jobs/{id}


def test_deleting_a_finished_job_removes_it_its_artifacts_and_their_bytes(
    client: Any, job: dict[str, Any], store_artifact: Callable[..., str], no_grace: None
) -> None:
    sha = store_artifact(job["id"], "model.onnx", b"optimized bytes", "application/octet-stream")
    store_artifact(job["id"], "report.json", b"{}", "application/json")
    _finish(job["id"])

    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204

    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert_problem(client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx"), 404, "not_found")
    assert not _stored(sha)
    assert job["id"] not in [j["id"] for j in client.get("/v1/jobs").json()["items"]]


def test_deleting_a_job_keeps_bytes_another_object_shares(
    client: Any,
    job: dict[str, Any],
    mlp_onnx: Path,
    store_artifact: Callable[..., str],
    no_grace: None,
) -> None:
    """An artifact whose bytes equal the uploaded model's (e.g. a no-op step) shares its blob."""
    sha = store_artifact(job["id"], "model.onnx", mlp_onnx.read_bytes())
    _finish(job["id"])

    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204

    assert _stored(sha)
    assert client.get(f"/v1/models/{job['model_id']}/file").content == mlp_onnx.read_bytes()


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_job_still_to_finish_cannot_be_deleted(
    client: Any, job: dict[str, Any], status: str
) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(status=status))

    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 409, "job_active")
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_deleting_an_unknown_job_is_404(client: Any) -> None:
    assert_problem(client.delete(f"/v1/jobs/{'0' * 8}-0000-4000-8000-{'0' * 12}"), 404, "not_found")


# ---------------------------------------------------------------- retention


def test_retention_is_off_by_default(client: Any, job: dict[str, Any]) -> None:
    _finish(job["id"], days_ago=10_000)

    assert _expire() == retention.Expired([], [], [])
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_an_old_finished_job_expires_to_410(
    client: Any, job: dict[str, Any], store_artifact: Callable[..., str], retention_days: int
) -> None:
    sha = store_artifact(job["id"], "model.onnx", b"old result", "application/octet-stream")
    _finish(job["id"], days_ago=retention_days + 1)

    assert _expire().jobs == [job["id"]]

    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 410, "expired")
    assert_problem(client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx"), 410, "expired")
    assert_problem(client.get(f"/v1/jobs/{job['id']}/report"), 410, "expired")
    assert not _stored(sha)
    assert client.get("/v1/jobs").json()["items"] == []
    assert_problem(client.get(f"/v1/jobs/{job['id']}/logs"), 410, "expired")
    with session_scope() as session:  # its log and events went with its bytes
        assert session.scalar(select(func.count()).where(JobEvent.job_id == job["id"])) == 0
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204  # the tombstone can go


def test_a_recent_job_and_its_young_model_stay(
    client: Any, job: dict[str, Any], retention_days: int
) -> None:
    _finish(job["id"], days_ago=retention_days - 1)

    assert _expire() == retention.Expired([], [], [])
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_an_old_model_expires_unless_a_job_still_needs_it(
    client: Any, job: dict[str, Any], mlp_onnx: Path, retention_days: int
) -> None:
    sha = hashlib.sha256(mlp_onnx.read_bytes()).hexdigest()
    _age_upload(MlModel, job["model_id"], retention_days + 1)

    assert _expire().models == []  # the queued job still needs it
    assert client.get(f"/v1/models/{job['model_id']}").status_code == 200

    _finish(job["id"])
    assert _expire().models == [job["model_id"]]
    assert_problem(client.get(f"/v1/models/{job['model_id']}"), 410, "expired")
    assert_problem(client.get(f"/v1/models/{job['model_id']}/file"), 410, "expired")
    assert not _stored(sha)
    response = client.post(
        "/v1/jobs", json={"model_id": job["model_id"], "steps": [{"op": "quantize"}]}
    )
    assert_problem(response, 410, "expired")


def test_an_old_dataset_expires_unless_a_job_still_needs_it(
    client: Any, model_id: str, retention_days: int
) -> None:
    dataset = _dataset(client)
    spec = {
        "model_id": model_id,
        "steps": [{"op": "quantize"}],
        "evaluation": {"dataset_id": dataset["id"]},
    }
    submitted = client.post("/v1/jobs", json=spec)
    assert submitted.status_code == 202, submitted.text
    _age_upload(Dataset, dataset["id"], retention_days + 1)

    assert _expire().datasets == []
    _finish(submitted.json()["id"])
    assert _expire().datasets == [dataset["id"]]

    assert_problem(client.get(f"/v1/datasets/{dataset['id']}"), 410, "expired")
    assert not _stored(dataset["sha256"])
    assert client.get("/v1/datasets").json()["items"] == []
