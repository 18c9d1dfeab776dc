"""Content-addressed blobs on a local (or shared) filesystem, published atomically."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from app.core.errors import NotFound
from app.core.storage.base import (
    CHUNK,
    BlobDownload,
    Storage,
    blob_key,
    corrupt,
    hash_of_key,
    missing,
    sha256_file,
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(Storage):
    """Blobs live at `sha256/ab/cd/<hash>` under the root; scratch defaults to root/scratch
    (the same disk, so a publish is a rename)."""

    def __init__(self, root: Path, scratch: Path | None = None) -> None:
        self.root = root.resolve()
        self.scratch = (scratch or self.root / "scratch").resolve()

    def path_of(self, key: str) -> Path:
        """The file behind a storage key; never a path outside the root."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path.is_relative_to(self.scratch):
            raise NotFound("No such stored file.")
        return path

    def put(self, src: Path, sha256: str) -> str:
        """Publish `src` under its hash: fsync, atomic rename, fsync the directory."""
        key = blob_key(sha256)
        dest = self.root / key
        try:
            os.utime(dest)
        except FileNotFoundError:
            pass
        else:
            src.unlink(missing_ok=True)
            return key
        dest.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as fh:
            os.fsync(fh.fileno())
        # A job's artifact was written by its jailed child, as the child's own uid: the blob
        # becomes the store's, read-only to others.
        os.chown(src, os.geteuid(), os.getegid())
        os.chmod(src, 0o644)
        try:
            os.replace(src, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._publish_across_devices(src, dest)
        _fsync_dir(dest.parent)
        return key

    @staticmethod
    def _publish_across_devices(src: Path, dest: Path) -> None:
        """Scratch on another disk (MODELPRESS_SCRATCH_DIR): copy beside the blob, then rename."""
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        src.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def age_seconds(self, key: str) -> float | None:
        try:
            return time.time() - self.path_of(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def blob_keys(self) -> Iterator[str]:
        base = self.root / "sha256"
        for path in sorted(base.glob("??/??/*")) if base.is_dir() else []:
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def hash_of(self, key: str) -> str | None:
        try:
            return sha256_file(self.path_of(key))
        except FileNotFoundError:
            return None

    def quarantine(self, key: str) -> str:
        dest = self.root / "quarantine" / hash_of_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path_of(key), dest)
        return str(dest)

    def is_quarantined(self, key: str) -> bool:
        return (self.root / "quarantine" / hash_of_key(key)).exists()

    def verified_path(self, key: str, size_bytes: int, hash_up_to: int) -> Path:
        """The blob's file after the checks of `open_verified`."""
        if self.is_quarantined(key):
            raise corrupt()
        path = self.path_of(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise missing() from exc
        if size != size_bytes or (size <= hash_up_to and sha256_file(path) != hash_of_key(key)):
            self.quarantine(key)
            raise corrupt()
        return path

    def open_verified(self, key: str, size_bytes: int, hash_up_to: int) -> BlobDownload:
        return BlobDownload(size=size_bytes, path=self.verified_path(key, size_bytes, hash_up_to))

    def copy_verified(self, key: str, dest: Path) -> None:
        if self.is_quarantined(key):
            raise corrupt()
        digest = hashlib.sha256()
        try:
            with self.path_of(key).open("rb") as src, dest.open("wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except FileNotFoundError as exc:
            dest.unlink(missing_ok=True)
            raise missing() from exc
        if digest.hexdigest() != hash_of_key(key):
            dest.unlink(missing_ok=True)
            self.quarantine(key)
            raise corrupt()
