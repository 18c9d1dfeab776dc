"""`MODELPRESS_STORAGE_URL`: a local path, `file:///path`, or `s3://bucket/prefix`, nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import unquote, urlsplit

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FORMS = "a local path, file:///absolute/path, or s3://bucket/prefix"


class StorageLocation(NamedTuple):
    """Where blobs live: a local directory (`path`) or a bucket and key prefix."""

    scheme: Literal["file", "s3"]
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""  # "" or "some/prefix/" (always ending in a slash)


def parse_storage_url(raw: str) -> StorageLocation:
    """Parse the setting; anything that is not one of the three forms is refused.

    Raises:
        ValueError: with what was wrong and the accepted forms.
    """
    value = raw.strip()
    if not value:
        raise ValueError(f"MODELPRESS_STORAGE_URL is empty; expected {_FORMS}")
    if not _SCHEME.match(value):
        return StorageLocation("file", path=Path(value))
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise ValueError(
            f"MODELPRESS_STORAGE_URL {raw!r} has a query or fragment; expected {_FORMS}"
        )
    if scheme == "file" and value[5:7] == "//":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(
                f"MODELPRESS_STORAGE_URL {raw!r}: a file URL names an absolute local path "
                "(file:///srv/modelpress)"
            )
        return StorageLocation("file", path=Path(path))
    if scheme == "s3" and value[3:5] == "//":
        return _s3(raw, parts.netloc, parts.path)
    raise ValueError(
        f"MODELPRESS_STORAGE_URL {raw!r} is not supported: expected {_FORMS} (write ./{value} "
        "for a local directory whose name has a colon)"
    )


def _s3(raw: str, bucket: str, path: str) -> StorageLocation:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(
            f"MODELPRESS_STORAGE_URL {raw!r}: {bucket!r} is not a valid bucket name (3-63 "
            "lower-case letters, digits, dots and hyphens)"
        )
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"MODELPRESS_STORAGE_URL {raw!r}: the prefix may not hold . or ..")
    prefix = "/".join(segments)
    return StorageLocation("s3", bucket=bucket, prefix=f"{prefix}/" if prefix else "")
