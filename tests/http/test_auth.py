"""API keys and tenant isolation with `MODELPRESS_AUTH_REQUIRED=true` (API-01, API-02, API-13)."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from support import assert_problem

from app.core.auth import create_key
from app.core.config import get_settings
from app.db.orm import ApiKey, Artifact, MlModel, Tenant
from app.db.session import session_scope
from app.main import create_app


@pytest.fixture
def auth_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def keys(auth_client: Any, env: dict[str, str]) -> dict[str, str]:
    """One plaintext key for tenant A and one for tenant B."""
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        return {t: create_key(session, f"tenant-{t}", get_settings()) for t in ("a", "b")}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def a_objects(
    auth_client: Any, env: dict[str, str], keys: dict[str, str], mlp_onnx: Path
) -> dict[str, str]:
    """Tenant A's model (ready), dataset, queued job and one artifact of that job."""
    headers = _auth(keys["a"])
    model = auth_client.post(
        "/v1/models", files={"file": ("m.onnx", mlp_onnx.read_bytes())}, headers=headers
    ).json()
    npz = io.BytesIO()
    np.savez(npz, input=np.zeros((4, 32), np.float32))
    files = {"file": ("d.npz", npz.getvalue())}
    dataset = auth_client.post("/v1/datasets", files=files, headers=headers).json()
    sha = model["sha256"]
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(MlModel).where(MlModel.id == model["id"]).values(status="ready"))
    spec = {"model_id": model["id"], "steps": [{"op": "quantize"}]}
    job = auth_client.post("/v1/jobs", json=spec, headers=headers).json()
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == "tenant-a")).one()
        session.add(
            Artifact(
                job_id=job["id"],
                tenant_id=tenant_id,
                name="model.onnx",
                kind="model",
                media_type="application/octet-stream",
                size_bytes=model["size_bytes"],
                sha256=sha,
                storage_key=f"sha256/{sha[:2]}/{sha[2:4]}/{sha}",
            )
        )
    return {"model": model["id"], "dataset": dataset["id"], "job": job["id"]}


# ---------------------------------------------------------------- API-01


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/models"),
        ("GET", "/v1/datasets"),
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", f"/v1/jobs/{uuid.uuid4()}"),
        ("GET", "/v1/passes"),
    ],
)
def test_v1_without_key_is_401_problem(auth_client: Any, method: str, path: str) -> None:
    """API-01: every `/v1` call needs a key (docs/product.md, "REST API v1")."""
    response = auth_client.request(method, path)

    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer not-a-key",
        "Bearer mp_",
        "Bearer mp_0123456789abcdef_" + "x" * 43,
        "Token mp_0123456789abcdef_secret",
    ],
)
def test_malformed_or_unknown_key_is_401_problem(
    auth_client: Any, keys: dict[str, str], authorization: str
) -> None:
    response = auth_client.get("/v1/models", headers={"Authorization": authorization})

    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_known_key_id_with_wrong_secret_is_401(auth_client: Any, keys: dict[str, str]) -> None:
    prefix = keys["a"].rsplit("_", 1)[0]

    response = auth_client.get("/v1/models", headers=_auth(prefix + "_" + "y" * 43))

    assert_problem(response, 401, "unauthorized")


def test_revoked_key_is_401(auth_client: Any, env: dict[str, str], keys: dict[str, str]) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))

    response = auth_client.get("/v1/models", headers=_auth(keys["a"]))

    assert_problem(response, 401, "unauthorized")


def test_valid_key_is_accepted(auth_client: Any, keys: dict[str, str]) -> None:
    response = auth_client.get("/v1/models", headers=_auth(keys["a"]))

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


def test_healthz_needs_no_key(auth_client: Any) -> None:
    response = auth_client.get("/healthz")

    assert response.status_code == 200


# ---------------------------------------------------------------- API-02


CROSS_TENANT = [
    ("GET", "/v1/models/{model}"),
    ("DELETE", "/v1/models/{model}"),
    ("GET", "/v1/models/{model}/file"),
    ("GET", "/v1/datasets/{dataset}"),
    ("DELETE", "/v1/datasets/{dataset}"),
    ("GET", "/v1/jobs/{job}"),
    ("POST", "/v1/jobs/{job}/cancel"),
    ("GET", "/v1/jobs/{job}/artifacts/model.onnx"),
    ("GET", "/v1/jobs/{job}/report"),
]


def _comparable(response: Any, object_id: str) -> dict[str, Any]:
    body = response.json()
    body["detail"] = body["detail"].replace(object_id, "<id>")
    body.pop("instance", None)
    return {"status": response.status_code, "type": response.headers["content-type"], **body}


@pytest.mark.parametrize(("method", "template"), CROSS_TENANT)
def test_other_tenants_object_is_404_like_a_random_id(
    auth_client: Any, keys: dict[str, str], a_objects: dict[str, str], method: str, template: str
) -> None:
    """API-02: B cannot tell A's object from one that does not exist."""
    kind = template.split("{")[1].split("}")[0]
    random_id = str(uuid.uuid4())
    other = auth_client.request(
        method, template.format(**{kind: random_id}), headers=_auth(keys["b"])
    )

    response = auth_client.request(method, template.format(**a_objects), headers=_auth(keys["b"]))

    assert_problem(response, 404, "not_found")
    assert _comparable(response, a_objects[kind]) == _comparable(other, random_id)


@pytest.mark.parametrize(("method", "template"), CROSS_TENANT)
def test_other_tenants_attempt_changes_nothing(
    auth_client: Any, keys: dict[str, str], a_objects: dict[str, str], method: str, template: str
) -> None:
    owner = _auth(keys["a"])
    reads = [
        f"/v1/models/{a_objects['model']}/file",
        f"/v1/datasets/{a_objects['dataset']}",
        f"/v1/jobs/{a_objects['job']}/artifacts/model.onnx",
    ]

    auth_client.request(method, template.format(**a_objects), headers=_auth(keys["b"]))

    job = auth_client.get(f"/v1/jobs/{a_objects['job']}", headers=owner).json()
    assert (job["status"], job["cancel_requested"]) == ("queued", False)
    assert [auth_client.get(path, headers=owner).status_code for path in reads] == [200] * 3


@pytest.mark.parametrize("path", ["/v1/models", "/v1/datasets", "/v1/jobs"])
def test_lists_show_only_the_callers_tenant(
    auth_client: Any, keys: dict[str, str], a_objects: dict[str, str], path: str
) -> None:
    response = auth_client.get(path, headers=_auth(keys["b"]))

    assert response.json()["items"] == []


def test_job_on_other_tenants_model_looks_like_a_missing_model(
    auth_client: Any, keys: dict[str, str], a_objects: dict[str, str]
) -> None:
    spec = {"model_id": a_objects["model"], "steps": [{"op": "quantize"}]}
    missing = {"model_id": str(uuid.uuid4()), "steps": [{"op": "quantize"}]}
    expected = auth_client.post("/v1/jobs", json=missing, headers=_auth(keys["b"]))

    response = auth_client.post("/v1/jobs", json=spec, headers=_auth(keys["b"]))

    assert_problem(response, 422, "spec_invalid")
    assert _comparable(response, a_objects["model"]) == _comparable(expected, missing["model_id"])


# ---------------------------------------------------------------- API-13


def test_api_key_table_stores_no_plaintext_key(
    auth_client: Any, env: dict[str, str], keys: dict[str, str]
) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        rows = [dict(r._mapping) for r in session.execute(text("SELECT * FROM api_key"))]

    dumped = repr(rows)
    assert len(rows) == 2
    for key in keys.values():
        secret = key.rsplit("_", 1)[1]
        assert key not in dumped
        assert secret not in dumped


def test_two_tenants_with_the_same_bytes_cannot_delete_each_others(
    auth_client: Any,
    keys: dict[str, str],
    mlp_onnx: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stored blob is shared (content-addressed); B deleting its copy must leave A's."""
    monkeypatch.setenv("MODELPRESS_BLOB_GRACE_SECONDS", "0")
    get_settings.cache_clear()
    data = mlp_onnx.read_bytes()
    uploads = {
        t: auth_client.post(
            "/v1/models", files={"file": ("m.onnx", data)}, headers=_auth(keys[t])
        ).json()
        for t in ("a", "b")
    }
    assert uploads["a"]["sha256"] == uploads["b"]["sha256"]

    deleted = auth_client.delete(f"/v1/models/{uploads['b']['id']}", headers=_auth(keys["b"]))

    assert deleted.status_code == 204
    response = auth_client.get(f"/v1/models/{uploads['a']['id']}/file", headers=_auth(keys["a"]))
    assert response.status_code == 200, response.text
    assert response.content == data
