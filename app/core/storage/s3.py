"""Content-addressed blobs in S3-compatible object storage (AWS S3, MinIO, ...), via boto3.

Object names are `<prefix>sha256/ab/cd/<hash>`; a blob that failed a check moves to
`<prefix>quarantine/<hash>`. Uploads go through boto3's managed transfer (multipart above
`MODELPRESS_S3_MULTIPART_THRESHOLD_BYTES`, parts of `MODELPRESS_S3_MULTIPART_CHUNK_BYTES`);
reads stream `get_object` bodies chunk by chunk, so neither direction holds a blob in memory.
Credentials and region come from boto3's standard chain (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, or an instance role).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.core.errors import StorageUnavailable
from app.core.storage.base import (
    CHUNK,
    BlobDownload,
    Storage,
    blob_key,
    corrupt,
    hash_of_key,
    missing,
)

_ABSENT = {"404", "NoSuchKey", "NotFound"}
RETRY_AFTER_S = 10


def _absent(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _ABSENT


class GuardedClient:
    """The S3 client, with an outage turned into `StorageUnavailable` (503 with Retry-After in
    the API; in a worker the attempt ends and its lease decides, as for a database outage): a
    connection or timeout error, or a 5xx answer, after botocore's own retries. Other client
    errors (404 above all, which callers test for) pass through unchanged."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except (BotoCoreError, S3UploadFailedError) as exc:
                raise _unavailable(exc) from exc
            except ClientError as exc:
                if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500:
                    raise _unavailable(exc) from exc
                raise

        return call


def _unavailable(exc: Exception) -> StorageUnavailable:
    return StorageUnavailable(
        f"The object store did not answer: {type(exc).__name__}.", retry_after=RETRY_AFTER_S
    )


def make_client(endpoint_url: str | None) -> Any:
    """A thread-safe S3 client: standard retries; path-style addressing for a custom endpoint
    (MinIO and most S3-compatible servers do not resolve `bucket.host` names)."""
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        signature_version="s3v4",
    )
    client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    return GuardedClient(client)


class S3Storage(Storage):
    """Blobs in one bucket under one prefix; scratch stays on the local disk."""

    def __init__(
        self, client: Any, bucket: str, prefix: str, scratch: Path, transfer: TransferConfig
    ) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.scratch = scratch.resolve()
        self.transfer = transfer

    def _name(self, key: str) -> str:
        return self.prefix + key

    def _quarantine_name(self, key: str) -> str:
        return f"{self.prefix}quarantine/{hash_of_key(key)}"

    def _head(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=name))
        except ClientError as exc:
            if _absent(exc):
                return None
            raise

    def put(self, src: Path, sha256: str) -> str:
        key = blob_key(sha256)
        name = self._name(key)
        if self._head(name) is not None:
            self._touch(name)
            src.unlink(missing_ok=True)
            return key
        self.client.upload_file(
            str(src),
            self.bucket,
            name,
            ExtraArgs={"Metadata": {"sha256": sha256}},
            Config=self.transfer,
        )
        src.unlink(missing_ok=True)
        return key

    def _touch(self, name: str) -> None:
        """Copy the object onto itself with new metadata: its LastModified restarts the grace
        period of the collector (a managed copy: multipart above the threshold, so objects
        over the 5 GB limit of a single CopyObject work too)."""
        self.client.copy(
            {"Bucket": self.bucket, "Key": name},
            self.bucket,
            name,
            ExtraArgs={
                "MetadataDirective": "REPLACE",
                "Metadata": {"sha256": hash_of_key(name), "touched": f"{time.time():.3f}"},
            },
            Config=self.transfer,
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def age_seconds(self, key: str) -> float | None:
        head = self._head(self._name(key))
        return None if head is None else time.time() - head["LastModified"].timestamp()

    def blob_keys(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._name("sha256/")
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                if key.count("/") == 3:
                    yield key

    def _chunks(self, name: str, byte_range: str | None = None) -> Iterator[bytes]:
        args = {"Bucket": self.bucket, "Key": name}
        body = self.client.get_object(**args, **({"Range": byte_range} if byte_range else {}))
        stream = body["Body"]
        try:
            yield from stream.iter_chunks(CHUNK)
        finally:
            stream.close()

    def hash_of(self, key: str) -> str | None:
        digest = hashlib.sha256()
        try:
            for chunk in self._chunks(self._name(key)):
                digest.update(chunk)
        except ClientError as exc:
            if _absent(exc):
                return None
            raise
        return digest.hexdigest()

    def quarantine(self, key: str) -> str:
        name, dest = self._name(key), self._quarantine_name(key)
        self.client.copy(
            {"Bucket": self.bucket, "Key": name}, self.bucket, dest, Config=self.transfer
        )
        self.client.delete_object(Bucket=self.bucket, Key=name)
        return f"s3://{self.bucket}/{dest}"

    def is_quarantined(self, key: str) -> bool:
        return self._head(self._quarantine_name(key)) is not None

    def copy_verified(self, key: str, dest: Path) -> None:
        if self.is_quarantined(key):
            raise corrupt()
        digest = hashlib.sha256()
        try:
            with dest.open("wb") as out:
                for chunk in self._chunks(self._name(key)):
                    digest.update(chunk)
                    out.write(chunk)
        except ClientError as exc:
            dest.unlink(missing_ok=True)
            if _absent(exc):
                raise missing() from exc
            raise
        if digest.hexdigest() != hash_of_key(key):
            dest.unlink(missing_ok=True)
            self.quarantine(key)
            raise corrupt()

    def open_verified(self, key: str, size_bytes: int, hash_up_to: int) -> BlobDownload:
        """Verify, then serve. A blob of at most `hash_up_to` bytes is streamed into a local
        scratch directory while it is hashed, and served from there once it matched (removed
        after the response). A larger one is size-checked and streamed straight from the
        object store, hashed on the way: the last chunk is held back until the hash matched,
        so a corrupt blob is quarantined and its response cut short, never delivered whole."""
        if self.is_quarantined(key):
            raise corrupt()
        head = self._head(self._name(key))
        if head is None:
            raise missing()
        if int(head["ContentLength"]) != size_bytes:
            self.quarantine(key)
            raise corrupt()
        if size_bytes <= hash_up_to:
            directory = self.new_scratch("download")
            try:
                self.copy_verified(key, directory / "blob")
            except BaseException:
                self.remove_tree(directory)
                raise
            return BlobDownload(
                size=size_bytes,
                path=directory / "blob",
                cleanup=lambda: self.remove_tree(directory),
            )
        return BlobDownload(
            size=size_bytes,
            chunks=lambda: self._verified_stream(key),
            head=lambda count: b"".join(
                self._chunks(self._name(key), f"bytes=0-{max(count, 1) - 1}")
            )[:count],
        )

    def _verified_stream(self, key: str) -> Iterator[bytes]:
        digest, held = hashlib.sha256(), b""
        for chunk in self._chunks(self._name(key)):
            if held:
                yield held
            digest.update(chunk)
            held = chunk
        if digest.hexdigest() != hash_of_key(key):
            self.quarantine(key)
            raise corrupt()
        if held:
            yield held
