"""Streamed upload and download with progress callbacks: memory stays flat for a 2 GB file.

An upload is a multipart body written by a generator that reads the file in chunks and counts the
bytes handed to the connection; its length is known in advance, so it goes out with a
`Content-Length` (the server refuses an oversized upload from that header, before a byte). A
download is written chunk by chunk to `<dest>.part` and renamed when complete: a failed or cut
download leaves nothing at `dest`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

# `on_progress(done_bytes, total_bytes)`; total is None when the server did not say.
ProgressCallback = Callable[[int, int | None], None]
CHUNK = 1 << 20


def _quote(value: str) -> str:
    # A multipart parameter in double quotes: quotes, backslashes and line breaks escaped, other
    # characters as UTF-8 (what browsers send and python-multipart reads).
    return json.dumps(value, ensure_ascii=False)[1:-1]


class MultipartUpload:
    """The `file` part and the small form fields of an upload, as a re-startable byte stream."""

    def __init__(
        self,
        file: Path,
        fields: dict[str, str],
        on_progress: ProgressCallback | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self.file, self.on_progress, self.chunk = file, on_progress, chunk
        self.boundary = secrets.token_hex(16)
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(k)}"\r\n\r\n'
            f"{v}\r\n".encode()
            for k, v in fields.items()
        )
        self.head = (
            head
            + (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{_quote(file.name)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
        )
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = file.stat().st_size

    @property
    def headers(self) -> dict[str, str]:
        length = len(self.head) + self.size + len(self.tail)
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(length),
        }

    def body(self) -> Iterator[bytes]:
        """A fresh pass over the body (each retry starts over), reporting the file's bytes."""
        yield self.head
        done = 0
        if self.on_progress:
            self.on_progress(0, self.size)
        with self.file.open("rb") as fh:
            while chunk := fh.read(self.chunk):
                yield chunk
                done += len(chunk)
                if self.on_progress:
                    self.on_progress(done, self.size)
        yield self.tail


def save_stream(
    response: httpx.Response, dest: Path, on_progress: ProgressCallback | None = None
) -> Path:
    """Write a streamed response to `dest` through `<dest>.part` (folders created)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    total = response.headers.get("content-length")
    size = int(total) if total and total.isdigit() else None
    part = dest.with_name(dest.name + ".part")
    done = 0
    try:
        with part.open("wb") as fh:
            if on_progress:
                on_progress(0, size)
            for chunk in response.iter_bytes(CHUNK):
                fh.write(chunk)
                done += len(chunk)
                if on_progress:  # bytes off the wire (what Content-Length counts) where known
                    on_progress(response.num_bytes_downloaded or done, size)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest
