"""The rules of datasets: checked at upload, stored content-addressed."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.blobs.service import release_after_commit
from app.core.config import Settings, get_settings
from app.core.errors import Gone, NotFound
from app.core.pagination import Page, page_of
from app.core.storage import Storage
from app.core.uploads import UploadedFile
from app.datasets import repository
from app.datasets.npz import inspect_npz, num_samples
from app.datasets.schemas import DatasetRead
from app.db.orm import Dataset
from app.ml_models.service import display_name
from app.tenants.service import check_storage


def create_dataset(
    *,
    session: Session,
    storage: Storage,
    settings: Settings,
    tenant_id: str,
    upload: UploadedFile,
    name: str | None,
) -> Dataset:
    """Check an uploaded .npz and store it.

    Raises:
        InvalidDataset: see `inspect_npz`.
        QuotaExceeded: the tenant's storage quota has no room for the file.
    """
    arrays = inspect_npz(upload.path, settings.max_dataset_bytes)
    samples = num_samples(arrays)
    check_storage(session, settings, tenant_id, upload.size)  # before a byte is stored
    key = storage.put(upload.path, upload.sha256)
    dataset = Dataset(
        tenant_id=tenant_id,
        name=display_name(name, upload.filename),
        size_bytes=upload.size,
        sha256=upload.sha256,
        storage_key=key,
        arrays=arrays,
        num_samples=samples,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset_or_raise(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    """The tenant's dataset, or NotFound (another tenant's dataset looks like a missing one)."""
    dataset = repository.get(session, tenant_id, dataset_id)
    if dataset is None:
        raise NotFound(f"No dataset {dataset_id}.")
    if dataset.expired_at is not None:
        raise Gone(f"Dataset {dataset_id} expired on {dataset.expired_at:%Y-%m-%d} (retention).")
    return dataset


def list_datasets(
    session: Session, tenant_id: str, limit: int, cursor: str | None
) -> Page[DatasetRead]:
    """One page of the tenant's datasets, newest first."""
    rows, next_cursor = page_of(repository.list_page(session, tenant_id, limit, cursor), limit)
    return Page[DatasetRead](
        items=[DatasetRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


def delete_dataset(*, session: Session, storage: Storage, tenant_id: str, dataset_id: str) -> None:
    """Delete a dataset; its bytes go once no row of any kind refers to them."""
    dataset = get_dataset_or_raise(session, tenant_id, dataset_id)
    session.delete(dataset)
    session.flush()
    release_after_commit(session, storage, dataset.storage_key, get_settings().blob_grace_seconds)
