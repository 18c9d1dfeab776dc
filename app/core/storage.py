"""Content-addressed artifact storage on a local (or shared) filesystem, published atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
import zlib
from pathlib import Path

from app.core.config import Settings, get_settings
from app.core.errors import NotFound

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """Blobs live at `sha256/ab/cd/<hash>` under the root; scratch space sits on the same disk."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.scratch = self.root / "scratch"

    def path_of(self, key: str) -> Path:
        """The file behind a storage key; never a path outside the root."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path.is_relative_to(self.scratch):
            raise NotFound("No such stored file.")
        return path

    def new_scratch(self, prefix: str) -> Path:
        """A fresh private directory for one upload or one job attempt."""
        path = self.scratch / f"{prefix}-{uuid.uuid4().hex}"
        path.mkdir(parents=True, mode=0o700)
        return path

    def put(self, src: Path, sha256: str) -> str:
        """Publish `src` (consumed) under its hash: fsync, atomic rename, fsync the directory."""
        key = f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"
        dest = self.root / key
        if dest.exists():
            src.unlink(missing_ok=True)
            return key
        dest.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, dest)
        _fsync_dir(dest.parent)
        return key

    def delete(self, key: str) -> None:
        """Remove a blob (callers check that no other row still refers to it)."""
        self.path_of(key).unlink(missing_ok=True)

    @staticmethod
    def remove_tree(path: Path) -> None:
        """Remove a scratch directory, ignoring what is already gone."""
        shutil.rmtree(path, ignore_errors=True)


def get_storage(settings: Settings | None = None) -> Storage:
    """The storage of the configured root (cheap to build)."""
    settings = settings or get_settings()
    root = settings.storage_root
    root.mkdir(parents=True, exist_ok=True)
    return Storage(root)
