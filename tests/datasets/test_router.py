"""`/v1/datasets`: `.npz` uploads checked without loading or unpickling, list, read, delete."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.core.config import get_settings
from app.main import create_app

SMALL_DATASET_LIMIT = 100_000


@pytest.fixture
def small_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client whose uncompressed dataset limit is 100 kB."""
    monkeypatch.setenv("MODELPRESS_MAX_DATASET_BYTES", str(SMALL_DATASET_LIMIT))
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        yield test_client


def _npz(compressed: bool = False, **arrays: Any) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _sample() -> bytes:
    rng = np.random.default_rng(0)
    return _npz(
        input=rng.standard_normal((10, 32)).astype(np.float32),
        labels=rng.integers(0, 10, size=10),
    )


def _upload(client: Any, data: bytes, filename: str = "data.npz", **fields: str) -> Any:
    files = {"file": (filename, data, "application/octet-stream")}
    return client.post("/v1/datasets", files=files, data=fields)


# ---------------------------------------------------------------- accepted


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_npz_upload_lists_arrays_and_samples(client: Any, compressed: bool) -> None:
    data = _npz(
        compressed,
        input=np.zeros((12, 3, 8, 8), dtype=np.float32),
        labels=np.arange(12, dtype=np.int64),
    )

    response = _upload(client, data)

    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(body["arrays"], key=lambda a: a["name"]) == [
        {"name": "input", "shape": [12, 3, 8, 8], "dtype": "float32"},
        {"name": "labels", "shape": [12], "dtype": "int64"},
    ]
    assert body["num_samples"] == 12
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size_bytes"] == len(data)


def test_display_name_comes_from_the_name_field(client: Any) -> None:
    response = _upload(client, _sample(), name="../../calibration set")

    assert response.json()["name"] == "calibration set"


# ---------------------------------------------------------------- refused (MF-21)


def test_object_array_is_invalid_dataset(client: Any) -> None:
    """MF-21: an object array would need unpickling; it is refused from its header."""
    data = _npz(input=np.array([{"a": 1}, None, "x"], dtype=object))

    response = _upload(client, data)

    assert_problem(response, 422, "invalid_dataset")


@pytest.mark.parametrize(
    "array",
    [np.array(["abc", "def"]), np.zeros(3, dtype=[("a", "i4"), ("b", "f4")])],
    ids=["strings", "structured"],
)
def test_non_numeric_array_is_invalid_dataset(client: Any, array: np.ndarray) -> None:
    response = _upload(client, _npz(input=array))

    assert_problem(response, 422, "invalid_dataset")


def test_arrays_with_different_sample_counts_are_invalid(client: Any) -> None:
    data = _npz(input=np.zeros((10, 4), np.float32), labels=np.zeros(9, np.int64))

    response = _upload(client, data)

    assert_problem(response, 422, "invalid_dataset")


def test_scalar_array_is_invalid(client: Any) -> None:
    response = _upload(client, _npz(input=np.float32(1.0)))

    assert_problem(response, 422, "invalid_dataset")


def test_empty_npz_is_invalid(client: Any) -> None:
    response = _upload(client, _npz())

    assert_problem(response, 422, "invalid_dataset")


def test_uncompressed_total_over_the_limit_is_invalid(small_client: Any) -> None:
    """Random data barely compresses: the total, not the ratio, is what is over the limit."""
    noise = np.random.default_rng(1).standard_normal(SMALL_DATASET_LIMIT // 4 + 1000)
    data = _npz(True, input=noise.astype(np.float32))

    response = _upload(small_client, data)

    assert_problem(response, 422, "invalid_dataset")


def test_deflate_bomb_is_invalid(small_client: Any) -> None:
    """MF-21: a few kB that inflate to megabytes are refused without inflating them."""
    data = _npz(True, input=np.zeros((1_000_000, 4), dtype=np.float32))

    response = _upload(small_client, data)

    assert len(data) < 100_000
    assert_problem(response, 422, "invalid_dataset")


@pytest.mark.parametrize("name", ["../x.npy", "/abs.npy", "dir/x.npy", "..\\x.npy", "x.pkl"])
def test_unsafe_member_name_is_invalid(client: Any, name: str) -> None:
    """MF-21: member names must be plain `<array>.npy`."""
    data = _zip({name: _npy(np.zeros(4, np.float32))})

    response = _upload(client, data)

    assert_problem(response, 422, "invalid_dataset")


@pytest.mark.parametrize(
    "data", [b"not a zip at all", b"PK\x03\x04truncated", b"\x93NUMPY"], ids=str
)
def test_non_zip_is_invalid(client: Any, data: bytes) -> None:
    response = _upload(client, data)

    assert_problem(response, 422, "invalid_dataset")


def test_refused_dataset_leaves_nothing_behind(client: Any, env: dict[str, str]) -> None:
    data = _npz(input=np.array([None], dtype=object))

    _upload(client, data)

    storage = Path(env["MODELPRESS_DATA_DIR"]) / "storage"
    assert list((storage / "scratch").rglob("*")) == []
    assert [p for p in (storage / "sha256").rglob("*") if p.is_file()] == []
    assert client.get("/v1/datasets").json()["items"] == []


# ---------------------------------------------------------------- list, read, delete


def test_get_returns_the_dataset(client: Any) -> None:
    created = _upload(client, _sample()).json()

    response = client.get(f"/v1/datasets/{created['id']}")

    assert response.status_code == 200
    assert response.json()["arrays"] == created["arrays"]
    assert response.json()["num_samples"] == 10


def test_get_unknown_dataset_is_404_problem(client: Any) -> None:
    response = client.get(f"/v1/datasets/{uuid.uuid4()}")

    assert_problem(response, 404, "not_found")


def test_list_pages_walk_every_dataset_exactly_once(client: Any) -> None:
    created = {
        _upload(client, _npz(x=np.zeros((n, 2), np.float32))).json()["id"] for n in (1, 2, 3)
    }

    first = client.get("/v1/datasets", params={"limit": 2}).json()
    second = client.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}).json()

    ids = [d["id"] for d in first["items"] + second["items"]]
    assert sorted(ids) == sorted(created)
    assert second["next_cursor"] is None


def test_delete_is_204_then_404(client: Any) -> None:
    created = _upload(client, _sample()).json()

    response = client.delete(f"/v1/datasets/{created['id']}")

    assert response.status_code == 204
    assert_problem(client.get(f"/v1/datasets/{created['id']}"), 404, "not_found")
    assert_problem(client.delete(f"/v1/datasets/{created['id']}"), 404, "not_found")
