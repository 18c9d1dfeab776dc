"""The streamed-upload dependency shared by `POST /v1/models` and `POST /v1/datasets`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.metrics import count_upload
from app.core.storage import Storage
from app.core.uploads import (
    FileTooLarge,
    UploadedFile,
    insufficient_storage,
    is_disk_full,
    receive_multipart,
)
from app.http.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from app.tenants.service import over_quota, storage_usage

# What every upload route may answer before its own checks (the OpenAPI notes of 400 and 413).
UPLOAD_PROBLEM_NOTES = {
    400: "Not a multipart/form-data body with one `file` part, or a malformed one "
    "(`malformed_multipart`, `too_many_parts`, `too_many_files`, `headers_too_large`, "
    "`invalid_content_length`).",
    413: "The file is over MODELPRESS_MAX_UPLOAD_BYTES, or over what the tenant's "
    "storage quota leaves (`payload_too_large`).",
}

QuotaReader = Callable[[], "tuple[int, int] | None"]


@dataclass(frozen=True)
class StreamedUpload:
    """The multipart `file` part, already on disk and hashed, and the small form fields."""

    file: UploadedFile
    fields: dict[str, str]


class UploadReceiver:
    """Streams the request's multipart body into a private scratch directory when awaited."""

    def __init__(
        self, request: Request, settings: Settings, storage: Storage, quota: QuotaReader
    ) -> None:
        self._request, self._settings, self._storage = request, settings, storage
        self._quota = quota
        self._scratch: Path | None = None

    async def __call__(self) -> StreamedUpload:
        """Read the body now: the file part goes to disk, sha256 and size counted on the way.

        A tenant's storage quota lowers the limit: a declared Content-Length or a stream that
        passes what is left is refused (403 `quota_exceeded`) before or while it is read; the
        service checks again, under the tenant's lock, before it stores the file.
        """
        usage = await run_in_threadpool(self._quota)
        limit = self._settings.max_upload_bytes
        left = limit if usage is None else usage[1] - usage[0]
        if left <= 0 and usage is not None:
            raise over_quota(*usage)
        try:
            self._scratch = self._storage.new_scratch("upload")
        except OSError as exc:
            if is_disk_full(exc):
                raise insufficient_storage() from exc
            raise
        try:
            file, fields = await receive_multipart(
                self._request.stream(),
                self._request.headers.get("content-type"),
                dest=self._scratch / "file.part",
                limit=min(limit, left),
                content_length=self._request.headers.get("content-length"),
            )
        except FileTooLarge as exc:
            if usage is None or left >= limit:
                raise
            raise over_quota(*usage, needs=f"this upload needs more than {left}") from exc
        count_upload(self._request.url.path, file.size)
        return StreamedUpload(file, fields)

    def close(self) -> None:
        """Remove the scratch directory (the service has moved an accepted file out of it)."""
        if self._scratch is not None:
            self._storage.remove_tree(self._scratch)


async def _upload_receiver(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    session: SessionDep,
    tenant_id: CurrentTenant,
) -> AsyncIterator[UploadReceiver]:
    # The route awaits the receiver itself: the body is read only after FastAPI has validated
    # every other parameter and authenticated the caller, as when each route parsed it inline.
    def quota() -> tuple[int, int] | None:
        try:
            return storage_usage(session, settings, tenant_id)
        finally:
            session.rollback()  # end the read: SQLite must not hold its lock while we stream

    receiver = UploadReceiver(request, settings, storage, quota)
    try:
        yield receiver
    finally:
        receiver.close()


# scope="function": the scratch directory goes as soon as the route returns, before the response.
UploadReceiverDep = Annotated[UploadReceiver, Depends(_upload_receiver, scope="function")]
