"""The storage contract, on both backends: a local directory and a real S3 server (moto).

Every behaviour the API and the worker rely on (publish, touch, verified reads, streaming,
listing, delete, quarantine, the collector and the scrub) is checked against both.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3server
from boto3.s3.transfer import TransferConfig

from app.blobs import service as blobs
from app.core.config import Settings
from app.core.errors import ArtifactCorrupt, StorageUnavailable
from app.core.storage import LocalStorage, Storage, blob_key
from app.db.session import session_scope

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part: the test's multipart threshold and part size


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3server.moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Storage:
    scratch = tmp_path / "scratch"
    if request.param == "local":
        return LocalStorage(tmp_path / "blobs", scratch)
    from app.core.storage.s3 import S3Storage, make_client

    for key, value in s3server.CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    url = request.getfixturevalue("endpoint")
    transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    return S3Storage(make_client(url), s3server.new_bucket(url), "tenant/pre/", scratch, transfer)


def _file(tmp_path: Path, data: bytes, name: str = "src") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _corrupt(store: Storage, key: str, data: bytes) -> None:
    """Change the stored bytes behind the store's back (bit rot, a bad disk, a bad copy)."""
    if isinstance(store, LocalStorage):
        store.path_of(key).write_bytes(data)
    else:
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)


def test_put_publishes_under_the_hash_and_consumes_the_source(
    store: Storage, tmp_path: Path
) -> None:
    src, sha = _file(tmp_path, b"model bytes")

    key = store.put(src, sha)

    assert key == blob_key(sha)
    assert not src.exists()
    assert list(store.blob_keys()) == [key]
    assert store.hash_of(key) == sha


def test_copy_verified_stages_the_bytes_into_local_scratch(store: Storage, tmp_path: Path) -> None:
    key = store.put(*_file(tmp_path, b"weights" * 1000))
    dest = store.new_scratch("job-x") / "model.onnx"

    store.copy_verified(key, dest)

    assert dest.read_bytes() == b"weights" * 1000
    assert dest.parent.parent == store.scratch


def test_putting_stored_bytes_again_restarts_their_age(store: Storage, tmp_path: Path) -> None:
    key = store.put(*_file(tmp_path, b"same bytes"))
    if isinstance(store, LocalStorage):
        old = time.time() - 3600
        os.utime(store.path_of(key), (old, old))
    else:
        time.sleep(1.1)  # S3's LastModified has one-second resolution
    before = store.age_seconds(key)

    store.put(*_file(tmp_path, b"same bytes", "again"))

    assert before is not None and before >= 1
    after = store.age_seconds(key)
    assert after is not None and after < before


def test_delete_removes_the_blob(store: Storage, tmp_path: Path) -> None:
    key = store.put(*_file(tmp_path, b"gone soon"))

    store.delete(key)

    assert store.age_seconds(key) is None
    assert store.hash_of(key) is None
    assert list(store.blob_keys()) == []


def test_listing_pages_through_every_blob(store: Storage, tmp_path: Path) -> None:
    keys = {store.put(*_file(tmp_path, f"blob {i}".encode(), f"f{i}")) for i in range(5)}
    store.quarantine(sorted(keys)[0])

    listed = list(store.blob_keys())

    assert set(listed) == keys - {sorted(keys)[0]}


def test_open_verified_serves_a_checked_copy(store: Storage, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    key = store.put(*_file(tmp_path, data))

    blob = store.open_verified(key, len(data), hash_up_to=64 * MIB)

    assert blob.path is not None and blob.size == len(data)
    assert blob.first_bytes(4) == data[:4]
    assert blob.read_bytes() == data
    if not isinstance(store, LocalStorage):  # the verified copy lived in scratch, now removed
        assert blob.path.is_relative_to(store.scratch)
        assert not blob.path.exists()


def test_a_blob_over_the_hash_limit_streams_in_chunks(store: Storage, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 17)
    key = store.put(*_file(tmp_path, data))

    blob = store.open_verified(key, len(data), hash_up_to=MIB)

    if isinstance(store, LocalStorage):
        assert blob.path is not None
        return
    assert blob.path is None and blob.chunks is not None
    chunks = list(blob.chunks())
    assert len(chunks) > 1 and b"".join(chunks) == data
    assert blob.first_bytes(512) == data[:512]


def test_multipart_upload_round_trips(store: Storage, tmp_path: Path) -> None:
    data = os.urandom(2 * PART + MIB)  # three parts of at most 5 MiB
    src, sha = _file(tmp_path, data)

    key = store.put(src, sha)

    if not isinstance(store, LocalStorage):
        head = store.client.head_object(Bucket=store.bucket, Key=store.prefix + key)
        assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag
    dest = tmp_path / "back"
    store.copy_verified(key, dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha


def test_corrupt_bytes_are_quarantined_not_served(store: Storage, tmp_path: Path) -> None:
    data = b"original bytes"
    key = store.put(*_file(tmp_path, data))
    _corrupt(store, key, b"tampered bytes")

    with pytest.raises(ArtifactCorrupt, match="integrity"):
        store.open_verified(key, len(data), hash_up_to=MIB)

    assert store.is_quarantined(key)
    assert list(store.blob_keys()) == []
    with pytest.raises(ArtifactCorrupt):
        store.copy_verified(key, tmp_path / "staged")


def test_a_size_mismatch_fails_without_hashing(store: Storage, tmp_path: Path) -> None:
    key = store.put(*_file(tmp_path, b"short"))

    with pytest.raises(ArtifactCorrupt):
        store.open_verified(key, 6, hash_up_to=0)

    assert store.is_quarantined(key)


def test_a_corrupt_stream_is_cut_short_and_quarantined(store: Storage, tmp_path: Path) -> None:
    if isinstance(store, LocalStorage):
        pytest.skip("local blobs over the limit are served as files (the scrub checks them)")
    data = os.urandom(2 * MIB)
    key = store.put(*_file(tmp_path, data))
    _corrupt(store, key, os.urandom(2 * MIB))
    blob = store.open_verified(key, len(data), hash_up_to=0)
    assert blob.chunks is not None
    received = []

    with pytest.raises(ArtifactCorrupt):
        for chunk in blob.chunks():
            received.append(chunk)

    assert sum(map(len, received)) < len(data)  # the last chunk was held back
    assert store.is_quarantined(key)


def test_missing_bytes_are_reported_as_missing(store: Storage) -> None:
    key = blob_key("ab" * 32)

    with pytest.raises(ArtifactCorrupt, match="missing"):
        store.open_verified(key, 1, hash_up_to=MIB)


def test_scrub_quarantines_what_no_longer_matches(store: Storage, tmp_path: Path) -> None:
    good = store.put(*_file(tmp_path, b"good", "a"))
    bad = store.put(*_file(tmp_path, b"bad", "b"))
    _corrupt(store, bad, b"rotten")

    corrupt = blobs.scrub(store)

    assert corrupt == [bad]
    assert store.is_quarantined(bad) and not store.is_quarantined(good)
    assert list(store.blob_keys()) == [good]


def test_the_collector_removes_unreferenced_blobs_past_their_grace(
    store: Storage, tmp_path: Path, env: dict[str, Any]
) -> None:
    key = store.put(*_file(tmp_path, b"nobody refers to me"))
    url = env["MODELPRESS_DATABASE_URL"]

    with session_scope(url) as session:
        young = blobs.collect_garbage(session, store, Settings(blob_grace_seconds=600))
    with session_scope(url) as session:
        old = blobs.collect_garbage(session, store, Settings(blob_grace_seconds=0))

    assert young.blobs == [] and old.blobs == [key]
    assert list(store.blob_keys()) == []


def test_an_unreachable_object_store_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage is StorageUnavailable (503 + Retry-After in the API), not a bare botocore
    error, for writes and reads alike; a missing blob is still 'missing', not an outage."""
    from app.core.storage.s3 import S3Storage, make_client

    for key, value in s3server.CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = f"http://127.0.0.1:{_closed_port()}"
    store = S3Storage(make_client(dead), "bucket", "p/", tmp_path / "scratch", TransferConfig())
    src, sha = _file(tmp_path, b"bytes that cannot be stored")

    with pytest.raises(StorageUnavailable) as put:
        store.put(src, sha)
    with pytest.raises(StorageUnavailable):
        store.copy_verified(blob_key(sha), tmp_path / "out")

    assert put.value.status == 503 and put.value.retry_after > 0


def test_the_api_answers_an_object_store_outage_with_503(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, mlp_onnx: Path
) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    for key, value in s3server.CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELPRESS_STORAGE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("MODELPRESS_S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        response = client.post("/v1/models", files={"file": ("m.onnx", mlp_onnx.read_bytes())})

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "storage_unavailable"
    assert int(response.headers["retry-after"]) > 0
    get_settings.cache_clear()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
