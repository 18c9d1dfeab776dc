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
from app.http.uploads import UploadReceiverDep

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
                        "name": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetRead,
    openapi_extra=UPLOAD_BODY,
    responses=problem_responses(400, 403, 413, 422, 429, 507),
    summary="Upload a dataset",
)
async def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant_id: CurrentTenant,
    receive_upload: UploadReceiverDep,
) -> DatasetRead:
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
    "", response_model=Page[DatasetRead], summary="List datasets", responses=problem_responses(400)
)
def list_datasets(
    session: SessionDep,
    tenant_id: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Page[DatasetRead]:
    return service.list_datasets(session, tenant_id, limit, cursor)


@router.get("/{dataset_id}", response_model=DatasetRead, responses=problem_responses(404))
def get_dataset(dataset_id: str, session: SessionDep, tenant_id: CurrentTenant) -> DatasetRead:
    return DatasetRead.model_validate(service.get_dataset_or_raise(session, tenant_id, dataset_id))


@router.delete("/{dataset_id}", status_code=204, responses=problem_responses(404))
def delete_dataset(
    dataset_id: str, session: SessionDep, storage: StorageDep, tenant_id: CurrentTenant
) -> Response:
    service.delete_dataset(
        session=session, storage=storage, tenant_id=tenant_id, dataset_id=dataset_id
    )
    session.commit()
    return Response(status_code=204)
