"""`/v1/datasets`: `.npz` upload, list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.core.pagination import MAX_LIMIT, Page, page_of
from app.core.uploads import receive_multipart
from app.datasets import repository, service
from app.datasets.schemas import DatasetRead
from app.http.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from app.http.problems import problem_responses

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
    responses=problem_responses(400, 413, 422),
    summary="Upload a dataset",
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant_id: CurrentTenant,
) -> DatasetRead:
    scratch = storage.new_scratch("upload")
    try:
        upload, fields = await receive_multipart(
            request.stream(),
            request.headers.get("content-type"),
            dest=scratch / "file.part",
            limit=settings.max_upload_bytes,
            content_length=request.headers.get("content-length"),
        )

        def _create() -> DatasetRead:
            dataset = service.create_dataset(
                session=session,
                storage=storage,
                settings=settings,
                tenant_id=tenant_id,
                upload=upload,
                name=fields.get("name"),
            )
            session.commit()
            return DatasetRead.model_validate(dataset)

        return await run_in_threadpool(_create)
    finally:
        storage.remove_tree(scratch)


@router.get("", response_model=Page[DatasetRead], summary="List datasets")
def list_datasets(
    session: SessionDep,
    tenant_id: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: str | None = None,
) -> Page[DatasetRead]:
    rows, next_cursor = page_of(repository.list_page(session, tenant_id, limit, cursor), limit)
    return Page[DatasetRead](
        items=[DatasetRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


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
