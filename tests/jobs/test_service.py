"""The jobs service on its own: the per-status counts behind `/metrics`."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.auth import get_or_create_tenant
from app.db.orm import Job, JobStatus, MlModel
from app.db.session import session_scope
from app.jobs.service import count_jobs_by_status


def _add_jobs(session: Session, tenant_name: str, *statuses: JobStatus) -> None:
    tenant = get_or_create_tenant(session, tenant_name)
    model = MlModel(
        tenant_id=tenant.id,
        name="m.onnx",
        format="onnx",
        size_bytes=1,
        sha256="0" * 64,
        storage_key="sha256/00/00/" + "0" * 64,
    )
    session.add(model)
    session.flush()
    for status in statuses:
        session.add(
            Job(tenant_id=tenant.id, model_id=model.id, spec={}, spec_sha256="0", status=status)
        )


def test_counts_list_every_status_at_zero_without_jobs(env: dict[str, str]) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        counts = count_jobs_by_status(session)

    assert counts == dict.fromkeys(["queued", "running", "succeeded", "failed", "cancelled"], 0)


def test_counts_add_up_every_tenants_jobs(env: dict[str, str]) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        _add_jobs(session, "a", JobStatus.queued, JobStatus.failed)
        _add_jobs(session, "b", JobStatus.queued)

    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        counts = count_jobs_by_status(session)

    assert counts == {"queued": 2, "running": 0, "succeeded": 0, "failed": 1, "cancelled": 0}
