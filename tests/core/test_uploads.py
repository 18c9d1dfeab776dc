"""The streaming multipart parser, fed chunk by chunk as an ASGI body arrives (UP-01, UP-02)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import (
    AppError,
    BadRequest,
    InsufficientStorage,
    PayloadTooLarge,
    Unprocessable,
)
from app.core.uploads import (
    MAX_FIELD_BYTES,
    MAX_FIELDS,
    MAX_HEADER_BYTES,
    MULTIPART_OVERHEAD,
    receive_multipart,
)

BOUNDARY = "modelpress-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _part(name: str, data: bytes, filename: str | None = None, extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n"
    return head.encode() + data + b"\r\n"


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class CountingStream:
    """An async body that records how many chunks the parser pulled."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.consumed = 0

    async def _iterate(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.consumed += 1
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()


def _receive(
    body: bytes | CountingStream,
    dest: Path,
    *,
    limit: int = 1024 * 1024,
    content_type: str | None = CONTENT_TYPE,
    chunk_size: int = 1000,
):
    stream = body if isinstance(body, CountingStream) else CountingStream(_chunks(body, chunk_size))
    return asyncio.run(receive_multipart(stream, content_type, dest=dest, limit=limit))


def test_file_part_streams_to_dest_with_sha256_and_size(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 40
    body = _body(_part("name", b"my model"), _part("file", payload, "model.onnx"))

    upload, fields = _receive(body, tmp_path / "file.part", chunk_size=97)

    assert upload.path.read_bytes() == payload
    assert upload.size == len(payload)
    assert upload.sha256 == hashlib.sha256(payload).hexdigest()
    assert upload.filename == "model.onnx"
    assert fields == {"name": "my model"}


def test_file_exactly_at_limit_is_accepted(tmp_path: Path) -> None:
    """UP-02: the limit itself is allowed; only limit + 1 is refused."""
    body = _body(_part("file", b"x" * 500, "a.bin"))

    upload, _ = _receive(body, tmp_path / "file.part", limit=500)

    assert upload.size == 500


def test_limit_plus_one_byte_is_payload_too_large(tmp_path: Path) -> None:
    """UP-02: a file one byte over the limit is refused with 413."""
    body = _body(_part("file", b"x" * 501, "a.bin"))

    with pytest.raises(PayloadTooLarge) as info:
        _receive(body, tmp_path / "file.part", limit=500)

    assert info.value.status == 413
    assert info.value.code == "payload_too_large"


def test_reading_stops_once_the_limit_is_passed(tmp_path: Path) -> None:
    """UP-02: the parser stops pulling the body at limit + 1 byte and writes no more than limit."""
    body = _body(_part("file", b"y" * 100_000, "big.bin"))
    stream = CountingStream(_chunks(body, 100))

    with pytest.raises(PayloadTooLarge):
        _receive(stream, tmp_path / "file.part", limit=1000)

    assert stream.consumed < 20
    assert stream.consumed < len(stream.chunks)
    assert (tmp_path / "file.part").stat().st_size <= 1000


def test_form_without_file_part_is_missing_file(tmp_path: Path) -> None:
    body = _body(_part("name", b"only a name"))

    with pytest.raises(Unprocessable) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.status == 422
    assert info.value.code == "missing_file"


def test_empty_file_is_refused(tmp_path: Path) -> None:
    """UP-01: a 0-byte file part is 422 `empty_file`."""
    body = _body(_part("file", b"", "empty.onnx"))

    with pytest.raises(Unprocessable) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.status == 422
    assert info.value.code == "empty_file"


def test_two_file_parts_are_refused(tmp_path: Path) -> None:
    body = _body(_part("file", b"first", "a.onnx"), _part("file", b"second", "b.onnx"))

    with pytest.raises(BadRequest) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.status == 400
    assert info.value.code == "too_many_files"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/octet-stream",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "a" * 201,
    ],
)
def test_not_multipart_or_missing_boundary_is_bad_request(
    tmp_path: Path, content_type: str | None
) -> None:
    body = _body(_part("file", b"data", "a.onnx"))

    with pytest.raises(BadRequest) as info:
        _receive(body, tmp_path / "file.part", content_type=content_type)

    assert info.value.status == 400
    assert not (tmp_path / "file.part").exists()


def test_too_many_parts_is_bad_request(tmp_path: Path) -> None:
    fields = [_part(f"field{i}", b"v") for i in range(MAX_FIELDS + 1)]
    body = _body(*fields, _part("file", b"data", "a.onnx"))

    with pytest.raises(BadRequest) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.code == "too_many_parts"


def test_oversize_form_field_is_refused(tmp_path: Path) -> None:
    body = _body(_part("file", b"data", "a.onnx"), _part("name", b"n" * (MAX_FIELD_BYTES + 1)))

    with pytest.raises(PayloadTooLarge) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.status == 413


def test_one_oversize_part_header_is_bad_request(tmp_path: Path) -> None:
    huge = f"X-Padding: {'p' * (MAX_HEADER_BYTES + 1)}\r\n"
    body = _body(_part("file", b"data", "a.onnx", extra=huge))

    with pytest.raises(BadRequest) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.status == 400
    assert not (tmp_path / "file.part").exists()


def test_part_headers_over_the_total_cap_are_refused(tmp_path: Path) -> None:
    """Each header is small, but together they pass the per-part header budget."""
    per_header = 3000
    count = MAX_HEADER_BYTES // per_header + 1
    extra = "".join(f"X-Pad-{i}: {'p' * per_header}\r\n" for i in range(count))
    body = _body(_part("file", b"data", "a.onnx", extra=extra))

    with pytest.raises(BadRequest) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.code == "headers_too_large"


@pytest.mark.parametrize(
    "body",
    [
        b"this is not multipart at all",
        f"--{BOUNDARY}\r\nno colon in this header\r\n\r\ndata\r\n--{BOUNDARY}--\r\n".encode(),
    ],
    ids=["garbage", "bad-header-line"],
)
def test_malformed_body_is_bad_request(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.status == 400
    assert info.value.code == "malformed_multipart"


def test_body_cut_before_the_closing_boundary_is_not_accepted(tmp_path: Path) -> None:
    """UP-08: a client that disconnects mid-file never yields an uploaded file."""
    body = _part("file", b"z" * 5000, "a.onnx")[:-2]

    with pytest.raises(AppError) as info:
        _receive(body, tmp_path / "file.part")

    assert info.value.status in (400, 422)


def test_an_oversized_epilogue_counts_against_the_limit(tmp_path: Path) -> None:
    """The parser skips an epilogue without a callback: the body is counted whole (chunked, so
    no Content-Length), and reading stops once it passes the limit plus the framing allowance."""
    limit = 1024
    junk = b"j" * 2 * (limit + MULTIPART_OVERHEAD)
    stream = CountingStream(_chunks(_body(_part("file", b"x" * 100, "a.onnx")) + junk, 64 * 1024))

    with pytest.raises(PayloadTooLarge):
        _receive(stream, tmp_path / "file.part", limit=limit)

    assert stream.consumed < len(stream.chunks) * 3 // 4


def test_a_preamble_is_refused_at_once(tmp_path: Path) -> None:
    junk = b"j" * 2 * (1024 + MULTIPART_OVERHEAD)
    stream = CountingStream(_chunks(junk + b"\r\n" + _body(_part("file", b"x", "a.onnx")), 65536))

    with pytest.raises((BadRequest, PayloadTooLarge)):
        _receive(stream, tmp_path / "file.part", limit=1024)

    assert stream.consumed == 1


def test_a_small_epilogue_is_accepted(tmp_path: Path) -> None:
    body = _body(_part("file", b"x" * 100, "a.onnx")) + b"trailing words\r\n"

    file, _ = _receive(body, tmp_path / "file.part", limit=1024)

    assert file.size == 100


class _FullDisk(io.RawIOBase):
    """A file whose writes fail as on a full filesystem."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_insufficient_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "file.part"
    monkeypatch.setattr(Path, "open", lambda self, mode="r": io.BufferedWriter(_FullDisk(), 16))

    with pytest.raises(InsufficientStorage) as info:
        _receive(_body(_part("file", b"x" * 5000, "a.onnx")), dest)

    assert (info.value.status, info.value.code) == (507, "insufficient_storage")
