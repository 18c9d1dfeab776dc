"""The rules of uploaded models: detect, refuse early, store, inspect in a sandboxed worker."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from sqlalchemy.orm import Session

from app.blobs.service import release_after_commit
from app.core.config import get_settings
from app.core.errors import Conflict, Gone, NotFound, Unprocessable
from app.core.formats import TORCHSCRIPT
from app.core.pagination import Page, page_of
from app.core.queue import INSPECT_MODEL, publish_after_commit
from app.core.storage import BlobDownload, Storage
from app.core.uploads import UploadedFile
from app.db.orm import MlModel, ModelStatus
from app.ml_models import repository
from app.ml_models.formats import detect_format
from app.ml_models.schemas import MlModelRead
from app.tenants.service import check_storage

MAX_DIMS, MAX_INPUTS = 8, 64


def display_name(raw: str | None, fallback: str) -> str:
    """A client-given name made safe to show: NFC, no path parts or control chars, bounded."""
    name = unicodedata.normalize("NFC", raw or fallback)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    return name.strip()[:255] or "model"


def _check_shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not 0 <= len(shape) <= MAX_DIMS:
        raise Unprocessable(f"{where} must be a list of at most {MAX_DIMS} dimensions.")
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 1_000_000:
            raise Unprocessable(f"{where} has a dimension that is not an integer in [1, 1e6].")
    return shape


def parse_input_shapes(raw: str | None) -> list[list[int]] | dict[str, list[int]] | None:
    """`input_shapes`: a JSON list of shapes by position, or an object of shapes by name."""
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Unprocessable(
            "`input_shapes` is not valid JSON.", code="invalid_input_shapes"
        ) from exc
    if isinstance(value, list) and 0 < len(value) <= MAX_INPUTS:
        return [_check_shape(s, f"input_shapes[{i}]") for i, s in enumerate(value)]
    if isinstance(value, dict) and 0 < len(value) <= MAX_INPUTS:
        return {str(k)[:255]: _check_shape(s, f"input_shapes.{k}") for k, s in value.items()}
    raise Unprocessable(
        "`input_shapes` must be a non-empty list of shapes or an object of shapes by input name.",
        code="invalid_input_shapes",
    )


def create_model(
    *,
    session: Session,
    storage: Storage,
    tenant_id: str,
    upload: UploadedFile,
    fields: dict[str, str],
) -> MlModel:
    """Check an uploaded file (torch-free), store it and queue its deep inspection.

    Raises:
        UnsafePickle, Unprocessable, UnsupportedModelFormat: from the cheap checks.
        QuotaExceeded: the tenant's storage quota has no room for the file.
    """
    detected = detect_format(upload.path)
    shapes = parse_input_shapes(fields.get("input_shapes"))
    if detected.format == TORCHSCRIPT and shapes is None:
        raise Unprocessable(
            "TorchScript archives carry no input shapes: send `input_shapes`, e.g. "
            '`[[1, 3, 224, 224]]` or `{"x": [1, 3, 224, 224]}`.',
            code="input_shapes_required",
        )
    check_storage(session, get_settings(), tenant_id, upload.size)  # before a byte is stored
    key = storage.put(upload.path, upload.sha256)
    model = MlModel(
        tenant_id=tenant_id,
        name=display_name(fields.get("name"), upload.filename),
        format=detected.format,
        size_bytes=upload.size,
        sha256=upload.sha256,
        storage_key=key,
        status=ModelStatus.validating,
        input_shapes=shapes,
    )
    session.add(model)
    session.flush()
    publish_after_commit(session, INSPECT_MODEL, model.id)
    return model


def get_model_or_raise(session: Session, tenant_id: str, model_id: str) -> MlModel:
    """The tenant's model, or NotFound (another tenant's model looks like a missing one)."""
    model = repository.get(session, tenant_id, model_id)
    if model is None:
        raise NotFound(f"No model {model_id}.")
    if model.expired_at is not None:
        raise Gone(f"Model {model_id} expired on {model.expired_at:%Y-%m-%d} (retention).")
    return model


def list_models(
    session: Session, tenant_id: str, limit: int, cursor: str | None
) -> Page[MlModelRead]:
    """One page of the tenant's models, newest first."""
    rows, next_cursor = page_of(repository.list_page(session, tenant_id, limit, cursor), limit)
    return Page[MlModelRead](
        items=[MlModelRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


def get_model_file(
    *, session: Session, storage: Storage, tenant_id: str, model_id: str
) -> tuple[MlModel, BlobDownload]:
    """The tenant's model and its stored bytes, for download, checked against its hash.

    Raises:
        Conflict: the model was rejected (its bytes are gone).
        ArtifactCorrupt: the stored bytes no longer match.
    """
    model = get_model_or_raise(session, tenant_id, model_id)
    if model.status == ModelStatus.rejected:
        raise Conflict(
            "A rejected model's bytes are not kept; upload a fixed file.", code="model_rejected"
        )
    limit = get_settings().verify_download_max_bytes
    return model, storage.open_verified(model.storage_key, model.size_bytes, limit)


def delete_model(*, session: Session, storage: Storage, tenant_id: str, model_id: str) -> None:
    """Delete a model with no jobs; its bytes go once no row of any kind
    refers to them (app/blobs).

    Raises:
        Conflict: jobs refer to the model (delete them first).
    """
    model = get_model_or_raise(session, tenant_id, model_id)
    if repository.has_jobs(session, model.id):
        raise Conflict("Jobs refer to this model.", code="model_in_use")
    session.delete(model)
    session.flush()
    release_after_commit(session, storage, model.storage_key, get_settings().blob_grace_seconds)
