"""Artifact storage: a local-filesystem backend and an S3-compatible one behind one interface.

`MODELPRESS_STORAGE_URL` picks the backend (app/core/storage_url.py): a local path or
`file://` URL keeps blobs on this machine's disk (or a shared mount); `s3://bucket/prefix`
keeps them in object storage, so API replicas and worker hosts share nothing but the database,
the broker and the bucket. Scratch is always local.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from app.core.config import Settings, get_settings
from app.core.storage.base import (
    CHUNK,
    BlobDownload,
    Storage,
    blob_key,
    compressed_size,
    newest_mtime,
    sha256_file,
)
from app.core.storage.local import LocalStorage

__all__ = [
    "CHUNK",
    "BlobDownload",
    "LocalStorage",
    "Storage",
    "blob_key",
    "compressed_size",
    "get_storage",
    "newest_mtime",
    "sha256_file",
]


def get_storage(settings: Settings | None = None) -> Storage:
    """The storage of the configured URL (cheap: an S3 client is built once per process)."""
    settings = settings or get_settings()
    location = settings.storage_location
    if location.scheme == "s3":
        return _s3_storage(
            location.bucket,
            location.prefix,
            settings.s3_endpoint_url,
            settings.scratch_root,
            settings.s3_multipart_threshold_bytes,
            settings.s3_multipart_chunk_bytes,
            os.getpid(),  # a forked worker process builds its own client
        )
    root = settings.storage_root
    root.mkdir(parents=True, exist_ok=True)
    return LocalStorage(root, settings.scratch_root)


@functools.lru_cache(maxsize=8)
def _s3_storage(
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    scratch: Path,
    threshold: int,
    chunk: int,
    _pid: int,
) -> Storage:
    from boto3.s3.transfer import TransferConfig

    from app.core.storage.s3 import S3Storage, make_client

    transfer = TransferConfig(multipart_threshold=threshold, multipart_chunksize=chunk)
    return S3Storage(make_client(endpoint_url), bucket, prefix, scratch, transfer)
