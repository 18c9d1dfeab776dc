"""`/v1/models`: upload (streamed), list, read, delete, download."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.core.formats import model_filename
from app.core.pagination import MAX_CURSOR_LENGTH, MAX_LIMIT, Page
from app.core.storage import BlobDownload
from app.db.orm import ModelStatus
from app.http.deps import CurrentTenant, SessionDep, StorageDep
from app.http.downloads import blob_response
from app.http.problems import problem_responses
from app.http.uploads import UPLOAD_PROBLEM_NOTES, UploadReceiverDep
from app.ml_models import archives, service
from app.ml_models.schemas import MlModelRead

router = APIRouter(prefix="/v1/models", tags=["models"])
WAIT_SECONDS = 60.0

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "ONNX, TorchScript (torch.jit.save) or .pt2 "
                            "(torch.export.save); detected from the bytes. An ONNX model with "
                            "external data (over 2 GB) comes as one zip or plain tar holding "
                            "exactly one `.onnx` and the files it references (in its folder or "
                            "below); a bare `.onnx` referencing any file is rejected. Archives "
                            "are checked before anything is stored: no absolute paths, `..`, "
                            "links or devices, no repeated or overlapping members, bounded "
                            "sizes and compression ratios, valid CRCs (422 `archive_*`).",
                        },
                        "name": {
                            "type": "string",
                            "description": "Display name (default: the file's name).",
                        },
                        "input_shapes": {
                            "type": "string",
                            "description": "JSON: `[[1, 3, 224, 224]]` by position or "
                            '`{"x": [1, 3, 224, 224]}` by name. Required for TorchScript.',
                        },
                    },
                },
                "examples": {
                    "onnx": {
                        "summary": "An ONNX model (`curl -F file=@model.onnx`)",
                        "value": {"file": "model.onnx", "name": "resnet18"},
                    },
                    "torchscript": {
                        "summary": "A TorchScript archive, which needs its input shapes",
                        "value": {
                            "file": "model.pt",
                            "name": "resnet18-ts",
                            "input_shapes": "[[1, 3, 224, 224]]",
                        },
                    },
                },
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=MlModelRead,
    openapi_extra=UPLOAD_BODY,
    responses=problem_responses(
        400,
        403,
        413,
        415,
        422,
        507,
        notes={
            **UPLOAD_PROBLEM_NOTES,
            415: "Bytes of no format ModelPress reads (`unsupported_model_format`).",
            422: "Refused by the cheap checks: `unsafe_pickle` (a pickled object: export it "
            "instead, see `detail`), `state_dict_without_graph`, `archive_*` (a hostile or "
            "broken zip/tar), `missing_file`, `empty_file`, `invalid_input_shapes`, "
            "`input_shapes_required` (TorchScript).",
        },
    ),
    summary="Upload a model",
    response_description="The stored model: `validating` (or, with `?wait=true`, inspected).",
)
async def upload_model(
    session: SessionDep,
    storage: StorageDep,
    tenant_id: CurrentTenant,
    receive_upload: UploadReceiverDep,
    wait: Annotated[bool, Query(description="Wait up to 60 s for inspection.")] = False,
) -> MlModelRead:
    """Stream the file to disk (sha256 while streaming), refuse bad bytes at once, then inspect
    the model in a sandboxed worker (`status: validating` until then)."""
    upload = await receive_upload()

    def _create() -> MlModelRead:
        model = service.create_model(
            session=session,
            storage=storage,
            tenant_id=tenant_id,
            upload=upload.file,
            fields=upload.fields,
        )
        session.commit()
        return MlModelRead.model_validate(model)

    created = await run_in_threadpool(_create)
    if not wait:
        return created
    return await _wait_inspected(session, tenant_id, created)


async def _wait_inspected(session: SessionDep, tenant_id: str, model: MlModelRead) -> MlModelRead:
    deadline = time.monotonic() + WAIT_SECONDS
    model_id = model.id

    def _read() -> MlModelRead:
        session.expire_all()
        fresh = MlModelRead.model_validate(service.get_model_or_raise(session, tenant_id, model_id))
        session.rollback()  # end the read: on SQLite an open transaction holds the write lock
        return fresh

    while model.status == ModelStatus.validating and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        model = await run_in_threadpool(_read)
    return model


@router.get(
    "",
    response_model=Page[MlModelRead],
    summary="List models",
    response_description="One page of models.",
    responses=problem_responses(400, 422),
)
def list_models(
    session: SessionDep,
    tenant_id: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Page[MlModelRead]:
    """The tenant's models, newest first, a page at a time (`next_cursor` to the next one)."""
    return service.list_models(session, tenant_id, limit, cursor)


@router.get(
    "/{model_id}",
    response_model=MlModelRead,
    responses=problem_responses(404, 410),
    summary="Read a model",
    response_description="The model.",
)
def get_model(model_id: str, session: SessionDep, tenant_id: CurrentTenant) -> MlModelRead:
    """One model: `status` (`validating` until the sandboxed inspection ends), and once `ready`
    its inputs, outputs and parameter count; a `rejected` one carries `error`."""
    return MlModelRead.model_validate(service.get_model_or_raise(session, tenant_id, model_id))


@router.delete(
    "/{model_id}",
    status_code=204,
    responses=problem_responses(
        404, 409, 410, notes={409: "Jobs refer to the model (`model_in_use`): delete them first."}
    ),
    summary="Delete a model",
    response_description="Deleted.",
)
def delete_model(
    model_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Response:
    """Delete a model that no job refers to; its stored bytes go once nothing refers to them."""
    service.delete_model(session=session, storage=storage, tenant_id=tenant_id, model_id=model_id)
    session.commit()
    return Response(status_code=204)


def _download_name(model_id: str, fmt: str, blob: BlobDownload) -> str:
    """`<id>.onnx`, or `<id>.zip` / `<id>.tar` for an ONNX model uploaded with external data."""
    kind = archives.sniff(blob.first_bytes(512)) if fmt == "onnx" else None
    return f"{model_id}.{kind}" if fmt == "onnx" and kind else model_filename(model_id, fmt)


@router.get(
    "/{model_id}/file",
    responses={
        200: {
            "description": "The uploaded bytes (`Content-Disposition` names them `<id>.onnx`, "
            "`.pt`, `.pt2`, `.zip` or `.tar`; `ETag` is their sha256).",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        **problem_responses(
            404,
            409,
            410,
            500,
            notes={409: "The model was rejected; its bytes are not kept (`model_rejected`)."},
        ),
    },
    response_class=FileResponse,
    summary="Download a model",
)
def download_model(
    model_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Response:
    """The uploaded file, checked against its sha256 first (`artifact_corrupt` instead of bad
    bytes); a rejected model's bytes are not kept (409 `model_rejected`)."""
    model, blob = service.get_model_file(
        session=session, storage=storage, tenant_id=tenant_id, model_id=model_id
    )
    return blob_response(
        blob,
        media_type="application/octet-stream",
        filename=_download_name(model.id, model.format, blob),
        headers={"ETag": f'"{model.sha256}"', "X-Content-Type-Options": "nosniff"},
    )
