"""The streamed-upload dependency shared by `POST /v1/models` and `POST /v1/datasets`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.storage import Storage
from app.core.uploads import UploadedFile, receive_multipart
from app.http.deps import SettingsDep, StorageDep


@dataclass(frozen=True)
class StreamedUpload:
    """The multipart `file` part, already on disk and hashed, and the small form fields."""

    file: UploadedFile
    fields: dict[str, str]


class UploadReceiver:
    """Streams the request's multipart body into a private scratch directory when awaited."""

    def __init__(self, request: Request, settings: Settings, storage: Storage) -> None:
        self._request, self._settings, self._storage = request, settings, storage
        self._scratch: Path | None = None

    async def __call__(self) -> StreamedUpload:
        """Read the body now: the file part goes to disk, sha256 and size counted on the way."""
        self._scratch = self._storage.new_scratch("upload")
        file, fields = await receive_multipart(
            self._request.stream(),
            self._request.headers.get("content-type"),
            dest=self._scratch / "file.part",
            limit=self._settings.max_upload_bytes,
            content_length=self._request.headers.get("content-length"),
        )
        return StreamedUpload(file, fields)

    def close(self) -> None:
        """Remove the scratch directory (the service has moved an accepted file out of it)."""
        if self._scratch is not None:
            self._storage.remove_tree(self._scratch)


async def _upload_receiver(
    request: Request, settings: SettingsDep, storage: StorageDep
) -> AsyncIterator[UploadReceiver]:
    # The route awaits the receiver itself: the body is read only after FastAPI has validated
    # every other parameter and authenticated the caller, as when each route parsed it inline.
    receiver = UploadReceiver(request, settings, storage)
    try:
        yield receiver
    finally:
        receiver.close()


# scope="function": the scratch directory goes as soon as the route returns, before the response.
UploadReceiverDep = Annotated[UploadReceiver, Depends(_upload_receiver, scope="function")]
