"""A checked blob as an HTTP response: the same headers whichever backend holds the bytes."""

from __future__ import annotations

from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response, StreamingResponse

from app.core.storage import BlobDownload


def content_disposition(filename: str) -> str:
    """`attachment` with the file name (RFC 6266 `filename*` when it is not plain ASCII)."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def blob_response(
    blob: BlobDownload, *, media_type: str, filename: str, headers: dict[str, str]
) -> Response:
    """A FileResponse over a local verified file (ranges, sendfile; a verified copy in scratch
    is removed afterwards), or a StreamingResponse over an object-storage body with the same
    Content-Length, Content-Disposition and caller headers (ETag: the sha256)."""
    cleanup = BackgroundTask(blob.close) if blob.cleanup is not None else None
    if blob.path is not None:
        return FileResponse(
            blob.path,
            media_type=media_type,
            filename=filename,
            headers=headers,
            background=cleanup,
        )
    assert blob.chunks is not None
    streamed = {
        **headers,
        "Content-Length": str(blob.size),
        "Content-Disposition": content_disposition(filename),
    }
    return StreamingResponse(blob.chunks(), media_type=media_type, headers=streamed)
