"""A checked blob as a response: a local file and an object-storage stream look the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.errors import ArtifactCorrupt
from app.core.storage import BlobDownload
from app.http.downloads import blob_response, content_disposition

DATA = b"stored bytes " * 1000
HEADERS = {"ETag": '"abc"', "X-Content-Type-Options": "nosniff"}


def _serve(blob: BlobDownload, filename: str = "model.onnx") -> TestClient:
    app = FastAPI()

    @app.get("/blob")
    def get_blob() -> object:
        return blob_response(
            blob, media_type="application/octet-stream", filename=filename, headers=HEADERS
        )

    return TestClient(app)


def _chunks() -> Iterator[bytes]:
    for start in range(0, len(DATA), 4096):
        yield DATA[start : start + 4096]


def test_a_stream_has_the_headers_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(DATA)

    from_file = _serve(BlobDownload(size=len(DATA), path=path)).get("/blob")
    streamed = _serve(BlobDownload(size=len(DATA), chunks=_chunks)).get("/blob")

    assert from_file.content == streamed.content == DATA
    for header in ("content-length", "content-disposition", "etag", "content-type"):
        assert from_file.headers[header] == streamed.headers[header], header
    assert streamed.headers["x-content-type-options"] == "nosniff"


def test_a_verified_copy_is_removed_after_the_response(tmp_path: Path) -> None:
    path = tmp_path / "copy" / "blob"
    path.parent.mkdir()
    path.write_bytes(DATA)
    blob = BlobDownload(size=len(DATA), path=path, cleanup=lambda: path.unlink())

    response = _serve(blob).get("/blob")

    assert response.content == DATA
    assert not path.exists()


def test_a_stream_that_fails_its_hash_is_cut_short() -> None:
    def corrupt() -> Iterator[bytes]:
        yield DATA[:4096]
        raise ArtifactCorrupt("The stored bytes failed their integrity check.")

    with pytest.raises(ArtifactCorrupt):
        _serve(BlobDownload(size=len(DATA), chunks=corrupt)).get("/blob")


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("model.onnx", 'attachment; filename="model.onnx"'),
        ("modèle.onnx", "attachment; filename*=utf-8''mod%C3%A8le.onnx"),
    ],
)
def test_content_disposition_names_the_file(name: str, header: str) -> None:
    assert content_disposition(name) == header
