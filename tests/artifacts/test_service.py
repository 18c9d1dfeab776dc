"""The artifacts service: a tenant reaches its own jobs' stored files and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.artifacts import service
from app.core.auth import get_or_create_tenant
from app.core.errors import NotFound
from app.core.storage import get_storage
from app.db.orm import Job
from app.db.session import session_scope


def _tenant_of(env: dict[str, str], job_id: str) -> str:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.tenant_id


def test_artifact_file_is_the_stored_blob(
    env: dict[str, str], job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    sha = store_artifact(job["id"], "model.onnx", b"model bytes")
    tenant_id = _tenant_of(env, job["id"])

    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        stored = service.get_artifact_file(
            session=session,
            storage=get_storage(),
            tenant_id=tenant_id,
            job_id=job["id"],
            name="model.onnx",
        )

    assert stored.row.sha256 == sha
    assert stored.blob.read_bytes() == b"model bytes"


def test_another_tenants_artifact_is_not_found(
    env: dict[str, str], job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    store_artifact(job["id"], "model.onnx", b"model bytes")
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        other = get_or_create_tenant(session, "someone-else").id

    with (
        session_scope(env["MODELPRESS_DATABASE_URL"]) as session,
        pytest.raises(NotFound, match="No job"),
    ):
        service.get_artifact_file(
            session=session, storage=get_storage(), tenant_id=other, job_id=job["id"], name="x"
        )


def test_missing_artifact_names_the_job_and_the_name(
    env: dict[str, str], job: dict[str, Any]
) -> None:
    tenant_id = _tenant_of(env, job["id"])

    with (
        session_scope(env["MODELPRESS_DATABASE_URL"]) as session,
        pytest.raises(NotFound, match=r"has no artifact 'report\.json'"),
    ):
        service.get_report(
            session=session, storage=get_storage(), tenant_id=tenant_id, job_id=job["id"]
        )


def test_report_html_is_the_stored_page(
    env: dict[str, str], job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    store_artifact(job["id"], "report.html", b"<p>page</p>", "text/html")
    tenant_id = _tenant_of(env, job["id"])

    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        page = service.get_report_html(
            session=session, storage=get_storage(), tenant_id=tenant_id, job_id=job["id"]
        )

    assert page == "<p>page</p>"
