"""Streaming multipart parsing: the file part goes to disk, hashed and counted as it arrives.

Starlette's own form parser spools the whole file before the handler sees it and has no size
limit for file parts; this parser enforces ours while reading and never holds the file in memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.errors import BadRequest, InsufficientStorage, PayloadTooLarge, Unprocessable

MAX_FIELDS = 8
MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024
MULTIPART_OVERHEAD = MAX_FIELDS * (MAX_FIELD_BYTES + MAX_HEADER_BYTES) + 64 * 1024
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """An OSError that says the filesystem (or the quota on it) has no room left."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def insufficient_storage() -> InsufficientStorage:
    return InsufficientStorage("The server has no room left to store this upload; try later.")


class FileTooLarge(PayloadTooLarge):
    """The file part (or the declared length) passed `limit`: what a caller that lowered the
    limit (a tenant's storage quota) tells apart from an oversized form field."""


@dataclass
class UploadedFile:
    path: Path
    size: int
    sha256: str
    filename: str


@dataclass
class _State:
    dest: Path
    limit: int
    file_field: str
    fields: dict[str, str] = field(default_factory=dict)
    file: UploadedFile | None = None
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, bytes] = field(default_factory=dict)
    header_bytes: int = 0
    part_name: str | None = None
    part_filename: str | None = None
    part_buffer: bytearray = field(default_factory=bytearray)
    fh: IO[bytes] | None = None
    digest: Any = None
    size: int = 0
    parts: int = 0


def _on_part_begin(st: _State) -> None:
    st.parts += 1
    if st.parts > MAX_FIELDS + 1:
        raise BadRequest("Too many multipart parts.", code="too_many_parts")
    st.headers, st.part_name, st.part_filename = {}, None, None
    st.part_buffer = bytearray()
    st.header_bytes = 0


def _on_headers_finished(st: _State) -> None:
    disposition = st.headers.get("content-disposition", b"")
    _, params = parse_options_header(disposition)
    name = params.get(b"name", b"").decode("utf-8", "replace")
    st.part_name = name
    if name == st.file_field:
        if st.file is not None or st.fh is not None:
            raise BadRequest(f"Only one `{st.file_field}` part is allowed.", code="too_many_files")
        st.part_filename = params.get(b"filename", b"upload").decode("utf-8", "replace")
        st.fh = st.dest.open("wb")
        st.digest = hashlib.sha256()
        st.size = 0


def _on_part_data(st: _State, data: bytes, start: int, end: int) -> None:
    chunk = memoryview(data)[start:end]  # no copy: a 2 GB upload is written and hashed as is
    if st.fh is not None:
        st.size += len(chunk)
        if st.size > st.limit:
            raise FileTooLarge(f"The upload exceeds the limit of {st.limit} bytes.")
        st.fh.write(chunk)
        st.digest.update(chunk)
        return
    st.part_buffer += chunk
    if len(st.part_buffer) > MAX_FIELD_BYTES:
        raise PayloadTooLarge(f"Form field `{st.part_name}` exceeds {MAX_FIELD_BYTES} bytes.")


def _on_part_end(st: _State) -> None:
    if st.fh is not None:
        st.fh.close()
        st.fh = None
        st.file = UploadedFile(st.dest, st.size, st.digest.hexdigest(), st.part_filename or "")
    elif st.part_name:
        st.fields[st.part_name] = st.part_buffer.decode("utf-8", "replace")


def _on_header_end(st: _State) -> None:
    st.headers[bytes(st.header_field).decode("latin-1").lower()] = bytes(st.header_value)
    st.header_field, st.header_value = bytearray(), bytearray()


def _header_cb(st: _State, target: str) -> Callable[[bytes, int, int], None]:
    def cb(data: bytes, start: int, end: int) -> None:
        st.header_bytes += end - start
        if st.header_bytes > MAX_HEADER_BYTES:
            raise BadRequest("Multipart part headers are too large.", code="headers_too_large")
        getattr(st, target).extend(data[start:end])

    return cb


def _parser(st: _State, boundary: bytes) -> MultipartParser:
    """A multipart parser whose callbacks fill `st`."""
    callbacks = {
        "on_part_begin": lambda: _on_part_begin(st),
        "on_part_data": lambda d, s, e: _on_part_data(st, d, s, e),
        "on_part_end": lambda: _on_part_end(st),
        "on_header_field": _header_cb(st, "header_field"),
        "on_header_value": _header_cb(st, "header_value"),
        "on_header_end": lambda: _on_header_end(st),
        "on_headers_finished": lambda: _on_headers_finished(st),
    }
    return MultipartParser(boundary, callbacks)  # type: ignore[arg-type]


async def receive_multipart(
    stream: AsyncIterator[bytes],
    content_type: str | None,
    *,
    dest: Path,
    limit: int,
    file_field: str = "file",
    content_length: str | None = None,
) -> tuple[UploadedFile, dict[str, str]]:
    """Parse a multipart body: the `file_field` part streams to `dest`, other fields are small.

    Raises:
        BadRequest: not multipart, malformed, or too many parts/headers.
        PayloadTooLarge: the file is larger than `limit` (reading stops at limit + 1 byte), or
            the whole body (preamble, fields, epilogue included) larger than `limit` plus
            `MULTIPART_OVERHEAD`.
        InsufficientStorage: the disk filled up (ENOSPC, EDQUOT) while the file was written.
        Unprocessable: no file part, or an empty file.
    """
    check_content_length(content_length, limit)
    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary or len(boundary) > 200:
        raise BadRequest("Expected a multipart/form-data body with a `file` part.")
    st = _State(dest=dest, limit=limit, file_field=file_field)
    parser = _parser(st, boundary)
    try:
        await _feed(parser, stream, limit)
    except (BadRequest, PayloadTooLarge):
        raise
    except OSError as exc:  # writing the file part
        if is_disk_full(exc):
            raise insufficient_storage() from exc
        raise
    except Exception as exc:  # the parser's own errors: malformed input
        raise BadRequest("Malformed multipart body.", code="malformed_multipart") from exc
    finally:
        _close_quietly(st)
    if st.file is None:
        raise Unprocessable(f"The form has no `{file_field}` part.", code="missing_file")
    if st.file.size == 0:
        raise Unprocessable("The uploaded file is empty.", code="empty_file")
    return st.file, st.fields


async def _feed(parser: MultipartParser, stream: AsyncIterator[bytes], limit: int) -> None:
    """Every byte of the body counts: the parser skips a preamble and an epilogue unseen."""
    total, cap = 0, limit + MULTIPART_OVERHEAD
    async for chunk in stream:
        total += len(chunk)
        if total > cap:
            raise FileTooLarge(f"The upload exceeds the limit of {limit} bytes.")
        parser.write(chunk)
    parser.finalize()


def _close_quietly(st: _State) -> None:
    if st.fh is not None:
        with contextlib.suppress(OSError):  # the flush fails too on a full disk: already raised
            st.fh.close()
        st.fh = None


def check_content_length(value: str | None, limit: int) -> None:
    """Refuse a bad or oversized declared length before reading the body (UP-02/UP-03).

    Raises:
        BadRequest: not a non-negative integer.
        PayloadTooLarge: more than the limit plus room for the multipart framing.
    """
    if value is None:
        return  # chunked: the streaming limit applies
    if not value.isdigit():
        raise BadRequest("Invalid Content-Length.", code="invalid_content_length")
    if int(value) > limit + MULTIPART_OVERHEAD:
        raise FileTooLarge(f"The upload exceeds the limit of {limit} bytes.")
