"""MODELPRESS_STORAGE_URL: a local path, file://, or s3://bucket/prefix; anything else refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import is_service_setting

from app.core.config import Settings, get_settings
from app.core.startup import StartupRefused, load_settings
from app.core.storage import LocalStorage, get_storage
from app.core.storage_url import StorageLocation, parse_storage_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if is_service_setting(key):
            monkeypatch.delenv(key)
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/srv/modelpress", StorageLocation("file", path=Path("/srv/modelpress"))),
        ("relative/dir", StorageLocation("file", path=Path("relative/dir"))),
        ("file:///srv/mp%20data", StorageLocation("file", path=Path("/srv/mp data"))),
        ("file://localhost/srv/x", StorageLocation("file", path=Path("/srv/x"))),
        ("s3://bucket", StorageLocation("s3", bucket="bucket")),
        ("s3://my.bucket-1/a/b/", StorageLocation("s3", bucket="my.bucket-1", prefix="a/b/")),
        ("s3://bkt//deep//x", StorageLocation("s3", bucket="bkt", prefix="deep/x/")),
    ],
)
def test_accepted_forms(raw: str, expected: StorageLocation) -> None:
    assert parse_storage_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("s3:/bucket", "not supported"),
        ("s3:bucket", "not supported"),
        ("gs://bucket/x", "not supported"),
        ("https://minio:9000/bucket", "not supported"),
        ("s3://UPPER/x", "bucket name"),
        ("s3://b/x", "bucket name"),
        ("s3://bucket/../x", r"\.\."),
        ("s3://bucket/x?versionId=1", "query"),
        ("file://host/srv", "absolute local path"),
        ("file://relative", "absolute local path"),
        ("  ", "empty"),
    ],
)
def test_refused_forms(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_storage_url(raw)


def test_an_s3_url_is_not_a_local_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, storage_url="s3://bucket/prefix")

    assert settings.storage_location == StorageLocation("s3", bucket="bucket", prefix="prefix/")
    assert settings.scratch_root == tmp_path / "scratch"
    assert not (Path.cwd() / "s3:").exists()


def test_local_storage_keeps_its_scratch_beside_the_blobs(tmp_path: Path) -> None:
    storage = get_storage(Settings(storage_url=f"file://{tmp_path}/blobs"))

    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "blobs"
    assert storage.scratch == tmp_path / "blobs" / "scratch"


def test_a_scratch_dir_of_its_own_still_publishes(tmp_path: Path) -> None:
    storage = get_storage(Settings(storage_url=str(tmp_path / "b"), scratch_dir=tmp_path / "s"))
    src = storage.new_scratch("upload") / "f"
    src.write_bytes(b"x")

    key = storage.put(src, "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")

    assert isinstance(storage, LocalStorage)
    assert storage.path_of(key).read_bytes() == b"x"


def test_a_bad_url_is_a_startup_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPRESS_STORAGE_URL", "s3:/bucket")

    with pytest.raises(StartupRefused, match=r"MODELPRESS_STORAGE_URL 's3:/bucket' is not"):
        load_settings()


def test_the_worker_command_refuses_a_bad_url_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
    env.update(MODELPRESS_STORAGE_URL="s3:/bucket", MODELPRESS_DATA_DIR=str(tmp_path))

    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 3
    assert "refusing to start" in done.stderr and "s3://bucket/prefix" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s3:").exists()
