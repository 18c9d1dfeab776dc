"""`/v1/datasets`: `.npz` upload, list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from app.core.pagination import MAX_CURSOR_LENGTH, MAX_LIMIT, Page
from app.datasets import service
from app.datasets.schemas import DatasetRead
from app.http.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from app.http.problems import problem_responses
from app.http.uploads import UPLOAD_PROBLEM_NOTES, UploadReceiverDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

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
                            "description": "An .npz: one array per model input (first axis = "
                            "samples) and an optional `labels` array. Never unpickled.",
                        },
                        "name": {
                            "type": "string",
                            "description": "Display name (default: the file's name).",
                        },
                    },
                },
                "examples": {
                    "calibration": {
                        "summary": "Calibration or evaluation data (`curl -F file=@data.npz`)",
                        "value": {"file": "data.npz", "name": "imagenet-val-256"},
                    }
                },
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetRead,
    openapi_extra=UPLOAD_BODY,
    responses=problem_responses(
        400,
        403,
        413,
        422,
        507,
        notes={
            **UPLOAD_PROBLEM_NOTES,
            422: "Not a readable .npz of numeric arrays with one sample count "
            "(`invalid_dataset`), or `missing_file`, `empty_file`.",
        },
    ),
    summary="Upload a dataset",
    response_description="The stored dataset, its arrays read.",
)
async def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant_id: CurrentTenant,
    receive_upload: UploadReceiverDep,
) -> DatasetRead:
    """Stream an `.npz` to disk and read its array headers (never unpickled): 201 with each
    array's name, shape and dtype and the number of samples."""
    upload = await receive_upload()

    def _create() -> DatasetRead:
        dataset = service.create_dataset(
            session=session,
            storage=storage,
            settings=settings,
            tenant_id=tenant_id,
            upload=upload.file,
            name=upload.fields.get("name"),
        )
        session.commit()
        return DatasetRead.model_validate(dataset)

    return await run_in_threadpool(_create)


@router.get(
    "",
    response_model=Page[DatasetRead],
    summary="List datasets",
    response_description="One page of datasets.",
    responses=problem_responses(400, 422),
)
def list_datasets(
    session: SessionDep,
    tenant_id: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Page[DatasetRead]:
    """The tenant's datasets, newest first, a page at a time (`next_cursor` to the next one)."""
    return service.list_datasets(session, tenant_id, limit, cursor)


@router.get(
    "/{dataset_id}",
    response_model=DatasetRead,
    responses=problem_responses(404, 410),
    summary="Read a dataset",
    response_description="The dataset.",
)
def get_dataset(dataset_id: str, session: SessionDep, tenant_id: CurrentTenant) -> DatasetRead:
    """One dataset: its arrays (name, shape, dtype) and number of samples."""
    return DatasetRead.model_validate(service.get_dataset_or_raise(session, tenant_id, dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses=problem_responses(404, 410),
    summary="Delete a dataset",
    response_description="Deleted.",
)
def delete_dataset(
    dataset_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Response:
    """Delete a dataset; its stored bytes go once nothing else refers to them."""
    service.delete_dataset(
        session=session, storage=storage, tenant_id=tenant_id, dataset_id=dataset_id
    )
    session.commit()
    return Response(status_code=204)
