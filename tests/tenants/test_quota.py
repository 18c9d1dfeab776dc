"""Per-tenant storage quota (MODELPRESS_TENANT_STORAGE_BYTES): a refused upload leaves nothing
behind (no blob, no row, no scratch), and the sum counts models, datasets and artifacts that
retention has not expired (RELIABILITY.md UP-09)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from support import assert_problem

from app.core.config import DEFAULT_TENANT_STORAGE_BYTES, Settings, get_settings
from app.db.base import utcnow
from app.db.orm import Dataset, Job, MlModel
from app.db.session import session_scope
from app.main import create_app
from app.tenants import repository


def _npz(rows: int) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, input=np.ones((rows, 32), np.float32))
    return buffer.getvalue()


def _stored(env: dict[str, str]) -> list[Path]:
    """Every file under the storage root (blobs and scratch)."""
    root = Path(env["MODELPRESS_DATA_DIR"]) / "storage"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _rows(env: dict[str, str]) -> int:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        models = session.scalar(select(func.count()).select_from(MlModel))
        datasets = session.scalar(select(func.count()).select_from(Dataset))
    return int(models or 0) + int(datasets or 0)


@pytest.fixture
def quota_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Any]:
    """A client whose tenant may store `quota` bytes."""
    clients: list[Any] = []

    def _make(quota: int) -> Any:
        monkeypatch.setenv("MODELPRESS_TENANT_STORAGE_BYTES", str(quota))
        get_settings.cache_clear()
        client = TestClient(create_app()).__enter__()
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.__exit__(None, None, None)


def test_an_upload_that_fits_is_stored(quota_client: Callable[[int], Any]) -> None:
    data = _npz(4)
    client = quota_client(len(data))

    response = client.post("/v1/datasets", files={"file": ("d.npz", data)})

    assert response.status_code == 201, response.text


def test_an_upload_over_the_quota_is_403_and_leaves_nothing(
    quota_client: Callable[[int], Any], env: dict[str, str]
) -> None:
    first, second = _npz(4), _npz(8)
    client = quota_client(len(first) + len(second) - 1)
    assert client.post("/v1/datasets", files={"file": ("a.npz", first)}).status_code == 201
    before = _stored(env)

    response = client.post("/v1/datasets", files={"file": ("b.npz", second)})

    body = assert_problem(response, 403, "quota_exceeded")
    assert (body["used_bytes"], body["quota_bytes"]) == (len(first), len(first) + len(second) - 1)
    assert str(len(first)) in body["detail"]
    assert _stored(env) == before  # the first blob only: no second blob, no scratch
    assert _rows(env) == 1


def test_a_model_upload_over_the_quota_is_403_and_leaves_nothing(
    quota_client: Callable[[int], Any], env: dict[str, str]
) -> None:
    client = quota_client(1000)

    response = client.post("/v1/models", files={"file": ("m.onnx", b"\x08\x07" + b"x" * 4000)})

    assert_problem(response, 403, "quota_exceeded")
    assert _stored(env) == []
    assert _rows(env) == 0


def test_a_declared_length_over_the_quota_is_refused_before_the_body_is_read(
    quota_client: Callable[[int], Any], env: dict[str, str]
) -> None:
    """The body has no parts: reading it would answer 400 or 422, so the 403 came first."""
    client = quota_client(1000)
    headers = {
        "content-type": "multipart/form-data; boundary=xyz",
        "content-length": str(50 * 1024**2),
    }

    response = client.post("/v1/models", content=b"{}", headers=headers)

    assert_problem(response, 403, "quota_exceeded")
    assert _stored(env) == []


def test_a_full_tenant_is_refused_before_the_body_is_read(
    quota_client: Callable[[int], Any], env: dict[str, str]
) -> None:
    data = _npz(4)
    client = quota_client(len(data))
    assert client.post("/v1/datasets", files={"file": ("a.npz", data)}).status_code == 201

    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    response = client.post("/v1/datasets", content=b"no parts", headers=headers)

    assert_problem(response, 403, "quota_exceeded")


def test_a_full_tenant_cannot_submit_jobs(
    client: Any, model_id: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs write artifacts: a tenant with no room left gets 403 instead of a job."""
    monkeypatch.setenv("MODELPRESS_TENANT_STORAGE_BYTES", "1")
    get_settings.cache_clear()
    with TestClient(create_app()) as full:
        response = full.post("/v1/jobs", json={"model_id": model_id, "steps": [{"op": "quantize"}]})

    assert_problem(response, 403, "quota_exceeded")


def test_usage_counts_models_datasets_and_artifacts_not_expired_ones(
    client: Any,
    env: dict[str, str],
    job: dict[str, Any],
    store_artifact: Callable[..., str],
) -> None:
    dataset = _npz(4)
    assert client.post("/v1/datasets", files={"file": ("d.npz", dataset)}).status_code == 201
    store_artifact(job["id"], "model.onnx", b"y" * 300)
    url = env["MODELPRESS_DATABASE_URL"]
    with session_scope(url) as session:
        model = session.scalars(select(MlModel)).one()
        tenant_id, model_bytes = model.tenant_id, model.size_bytes
        counted = repository.storage_used(session, tenant_id)
        session.execute(update(Dataset).values(expired_at=utcnow()))
        session.execute(update(Job).values(expired_at=utcnow()))
    with session_scope(url) as session:
        after_retention = repository.storage_used(session, tenant_id)

    assert counted == model_bytes + len(dataset) + 300
    assert after_retention == model_bytes


def test_rejected_models_do_not_count(client: Any, env: dict[str, str], model_id: str) -> None:
    """A rejected model's bytes are not kept."""
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(MlModel).values(status="rejected"))
        tenant_id = session.scalars(select(MlModel.tenant_id)).one()
        used = repository.storage_used(session, tenant_id)

    assert used == 0


@pytest.mark.parametrize(
    ("auth", "setting", "expected"),
    [
        (False, None, None),
        (True, None, DEFAULT_TENANT_STORAGE_BYTES),
        (True, 0, None),
        (False, 5, 5),
        (True, 5, 5),
    ],
)
def test_the_default_quota_is_finite_only_with_auth_on(
    monkeypatch: pytest.MonkeyPatch, auth: bool, setting: int | None, expected: int | None
) -> None:
    monkeypatch.delenv("MODELPRESS_TENANT_STORAGE_BYTES", raising=False)
    settings = Settings(auth_required=auth, tenant_storage_bytes=setting)

    assert settings.storage_quota_bytes == expected


def test_two_concurrent_uploads_that_fit_only_alone_store_one(
    quota_client: Callable[[int], Any], env: dict[str, str]
) -> None:
    """UP-09: the service's check runs under the tenant's lock; used bytes never pass the quota."""
    from concurrent.futures import ThreadPoolExecutor

    data = [_npz(4), _npz(5)]
    client = quota_client(len(data[0]) + len(data[1]) - 1)

    def upload(payload: bytes) -> int:
        return int(client.post("/v1/datasets", files={"file": ("d.npz", payload)}).status_code)

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(upload, data))

    assert statuses == [201, 403]
    assert _rows(env) == 1
