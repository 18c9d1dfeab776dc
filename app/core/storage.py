"""Content-addressed artifact storage on a local (or shared) filesystem, published atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

from app.core.config import Settings, get_settings
from app.core.errors import ArtifactCorrupt, NotFound

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


def newest_mtime(path: Path) -> float:
    """The latest modification time in a directory tree (a live upload or job keeps it fresh)."""
    newest = path.stat().st_mtime
    for child in path.rglob("*"):
        try:
            newest = max(newest, child.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


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
        """Publish `src` (consumed) under its hash: fsync, atomic rename, fsync the directory.

        A blob already stored is touched instead: its modification time restarts the grace
        period of the garbage collector, so the row about to be committed for it cannot lose a
        race with a collector that saw no row yet (app/blobs/service.py).
        """
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
        os.replace(src, dest)
        _fsync_dir(dest.parent)
        return key

    def delete(self, key: str) -> None:
        """Remove a blob (only app/blobs/service.py calls it, after checking every reference)."""
        self.path_of(key).unlink(missing_ok=True)

    def age_seconds(self, key: str) -> float | None:
        """Seconds since the blob was stored or last touched by `put`; None when it is gone."""
        try:
            return time.time() - self.path_of(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def blob_keys(self) -> Iterator[str]:
        """Every stored blob's key (a walk of the sha256 tree; scratch is not in it)."""
        base = self.root / "sha256"
        for path in sorted(base.glob("??/??/*")) if base.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(self.root).as_posix()

    def quarantine(self, key: str) -> Path:
        """Move a blob whose bytes no longer match its hash out of the served tree."""
        dest = self.root / "quarantine" / Path(key).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path_of(key), dest)
        return dest

    def is_quarantined(self, key: str) -> bool:
        return (self.root / "quarantine" / Path(key).name).exists()

    def verified_path(self, key: str, size_bytes: int, hash_up_to: int) -> Path:
        """The blob's file after checking it is still what was stored.

        The size is always checked; the bytes are re-hashed when the blob is at most
        `hash_up_to` bytes (larger blobs rely on the scheduled scrub). A blob that fails is
        quarantined.

        Raises:
            ArtifactCorrupt: the blob is missing, quarantined, or no longer matches its hash.
        """
        if self.is_quarantined(key):
            raise ArtifactCorrupt("The stored bytes failed their integrity check.")
        path = self.path_of(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise ArtifactCorrupt("The stored bytes are missing.") from exc
        if size != size_bytes or (size <= hash_up_to and sha256_file(path) != Path(key).name):
            self.quarantine(key)
            raise ArtifactCorrupt("The stored bytes failed their integrity check.")
        return path

    def copy_verified(self, key: str, dest: Path) -> None:
        """Copy a blob into scratch, hashing what is copied: a job never runs on bad bytes.

        Raises:
            ArtifactCorrupt: the blob is missing, quarantined, or its bytes no longer match
                (it is quarantined, and the copy removed).
        """
        if self.is_quarantined(key):
            raise ArtifactCorrupt("The stored bytes failed their integrity check.")
        digest = hashlib.sha256()
        try:
            with self.path_of(key).open("rb") as src, dest.open("wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except FileNotFoundError as exc:
            dest.unlink(missing_ok=True)
            raise ArtifactCorrupt("The stored bytes are missing.") from exc
        if digest.hexdigest() != Path(key).name:
            dest.unlink(missing_ok=True)
            self.quarantine(key)
            raise ArtifactCorrupt("The stored bytes failed their integrity check.")

    def scratch_dirs(self) -> Iterator[Path]:
        """The scratch directories of uploads, inspections and job attempts."""
        yield from (
            (p for p in self.scratch.iterdir() if p.is_dir()) if self.scratch.is_dir() else ()
        )

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
