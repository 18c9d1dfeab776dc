"""What every storage backend offers: content-addressed blobs, and local scratch beside them.

A blob's key is `sha256/ab/cd/<hash>`: its name is its hash, so any reader can check the bytes.
Scratch (uploads being received, job attempts, verified downloads) is always a local directory,
whatever the backend: the jailed sandbox child sees only its own scratch, never the store.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import ArtifactCorrupt

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def compressed_size(path: Path) -> int:
    """Bytes of the file after zlib level 6, streamed: what zeros and int8 buy on the wire."""
    compressor, size = zlib.compressobj(6), 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK * 16):
            size += len(compressor.compress(chunk))
    return size + len(compressor.flush())


def blob_key(sha256: str) -> str:
    """The storage key of the blob with this hash (its file name is the hash)."""
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def hash_of_key(key: str) -> str:
    """The hash a blob key names (its last segment)."""
    return key.rsplit("/", 1)[-1]


def newest_mtime(path: Path) -> float:
    """The latest modification time in a directory tree (a live upload or job keeps it fresh)."""
    newest = path.stat().st_mtime
    for child in path.rglob("*"):
        try:
            newest = max(newest, child.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


def corrupt() -> ArtifactCorrupt:
    return ArtifactCorrupt("The stored bytes failed their integrity check.")


def missing() -> ArtifactCorrupt:
    return ArtifactCorrupt("The stored bytes are missing.")


@dataclass
class BlobDownload:
    """A checked blob, ready to serve: a local file (`path`), or a stream (`chunks`).

    The local backend, and the S3 backend for a blob small enough to re-hash, give a `path`
    whose bytes were verified; the S3 backend streams a larger blob (its size checked) from
    the object store, hashing as it goes (see `S3Storage.open_verified`).
    """

    size: int
    path: Path | None = None
    chunks: Callable[[], Iterator[bytes]] | None = None
    head: Callable[[int], bytes] | None = None
    cleanup: Callable[[], None] | None = None

    def first_bytes(self, count: int) -> bytes:
        """The first `count` bytes (a format sniff), without reading the whole blob."""
        if self.path is not None:
            with self.path.open("rb") as fh:
                return fh.read(count)
        assert self.head is not None
        return self.head(count)

    def read_bytes(self) -> bytes:
        """The whole blob in memory (reports: small documents)."""
        try:
            if self.path is not None:
                return self.path.read_bytes()
            assert self.chunks is not None
            return b"".join(self.chunks())
        finally:
            self.close()

    def close(self) -> None:
        """Remove the verified copy in scratch, if any (idempotent)."""
        cleanup, self.cleanup = self.cleanup, None
        if cleanup is not None:
            cleanup()


class Storage(ABC):
    """The blob store of the deployment, with local scratch (cheap to build)."""

    scratch: Path

    def new_scratch(self, prefix: str) -> Path:
        """A fresh private local directory for one upload, download or job attempt."""
        path = self.scratch / f"{prefix}-{uuid.uuid4().hex}"
        path.mkdir(parents=True, mode=0o700)
        return path

    def scratch_dirs(self) -> Iterator[Path]:
        """The scratch directories of uploads, inspections and job attempts."""
        yield from (
            (p for p in self.scratch.iterdir() if p.is_dir()) if self.scratch.is_dir() else ()
        )

    @staticmethod
    def remove_tree(path: Path) -> None:
        """Remove a scratch directory, ignoring what is already gone."""
        shutil.rmtree(path, ignore_errors=True)

    @abstractmethod
    def put(self, src: Path, sha256: str) -> str:
        """Publish `src` (consumed) under its hash and return its key.

        A blob already stored is touched instead: its age restarts the grace period of the
        garbage collector, so the row about to be committed for it cannot lose a race with a
        collector that saw no row yet (app/blobs/service.py).
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob (only app/blobs/service.py calls it, after checking every reference)."""

    @abstractmethod
    def age_seconds(self, key: str) -> float | None:
        """Seconds since the blob was stored or last touched by `put`; None when it is gone."""

    @abstractmethod
    def blob_keys(self) -> Iterator[str]:
        """Every stored blob's key (scratch and quarantine are not in it)."""

    @abstractmethod
    def hash_of(self, key: str) -> str | None:
        """The sha256 of the stored bytes, streamed (the scrub); None when the blob is gone."""

    @abstractmethod
    def quarantine(self, key: str) -> str:
        """Move a blob whose bytes no longer match its hash out of the served tree; returns
        where it went."""

    @abstractmethod
    def is_quarantined(self, key: str) -> bool:
        """Whether the blob of this key failed a check and was moved aside."""

    @abstractmethod
    def open_verified(self, key: str, size_bytes: int, hash_up_to: int) -> BlobDownload:
        """The blob, for download, after checking it is still what was stored.

        The size is always checked; the bytes are re-hashed when the blob is at most
        `hash_up_to` bytes (larger blobs rely on the scheduled scrub). A blob that fails is
        quarantined.

        Raises:
            ArtifactCorrupt: the blob is missing, quarantined, or no longer matches its hash.
        """

    @abstractmethod
    def copy_verified(self, key: str, dest: Path) -> None:
        """Copy a blob into (local) scratch, hashing what is copied: a job never runs on bad
        bytes.

        Raises:
            ArtifactCorrupt: the blob is missing, quarantined, or its bytes no longer match
                (it is quarantined, and the copy removed).
        """
