"""`POST /v1/models` and friends through the HTTP API: accepted uploads, reads, delete, download."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import assert_problem


@pytest.fixture(scope="module")
def torchscript_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import torch
    from networks import tiny_linear

    path = tmp_path_factory.mktemp("ts") / "model.pt"
    module = tiny_linear()
    torch.jit.save(torch.jit.script(module), path)
    return path.read_bytes()


def _upload(
    client: Any,
    data: bytes,
    filename: str = "model.onnx",
    content_type: str = "application/octet-stream",
    **fields: str,
) -> Any:
    return client.post("/v1/models", files={"file": (filename, data, content_type)}, data=fields)


def _blob(env: dict[str, str], sha256: str) -> Path:
    root = Path(env["MODELPRESS_DATA_DIR"]) / "storage"
    return root / "sha256" / sha256[:2] / sha256[2:4] / sha256


# ---------------------------------------------------------------- accepted uploads


def test_onnx_upload_is_created_and_validating(client: Any, mlp_onnx: Path) -> None:
    data = mlp_onnx.read_bytes()

    response = _upload(client, data)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "onnx"
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size_bytes"] == len(data)
    assert body["status"] == "validating"
    assert body["name"] == "model.onnx"
    uuid.UUID(body["id"])


def test_upload_stores_the_bytes_content_addressed(
    client: Any, env: dict[str, str], mlp_onnx: Path
) -> None:
    data = mlp_onnx.read_bytes()

    body = _upload(client, data).json()

    assert _blob(env, body["sha256"]).read_bytes() == data


def test_content_type_lie_does_not_change_the_format(client: Any, mlp_onnx: Path) -> None:
    """UP-07: ONNX bytes sent as image/png are detected as ONNX."""
    response = _upload(client, mlp_onnx.read_bytes(), "picture.png", "image/png")

    assert response.status_code == 201, response.text
    assert response.json()["format"] == "onnx"


def test_name_field_overrides_the_file_name(client: Any, mlp_onnx: Path) -> None:
    response = _upload(client, mlp_onnx.read_bytes(), name="resnet-tiny")

    assert response.json()["name"] == "resnet-tiny"


def test_torchscript_with_input_shapes_is_created(client: Any, torchscript_bytes: bytes) -> None:
    response = _upload(client, torchscript_bytes, "model.pt", input_shapes="[[1, 4]]")

    assert response.status_code == 201, response.text
    assert response.json()["format"] == "torchscript"
    assert response.json()["input_shapes"] == [[1, 4]]


def test_input_shapes_by_name_are_kept(client: Any, torchscript_bytes: bytes) -> None:
    response = _upload(client, torchscript_bytes, "model.pt", input_shapes='{"x": [2, 4]}')

    assert response.status_code == 201, response.text
    assert response.json()["input_shapes"] == {"x": [2, 4]}


@pytest.mark.parametrize(
    "filename",
    ["../../etc/passwd", "..\\..\\win.ini", "a" * 4091 + ".onnx", "\u202egnp.onnx", "CON"],
    ids=["dotdot", "backslash", "4k-name", "rtl-override", "con"],
)
def test_path_like_file_names_are_only_display_names(
    client: Any, env: dict[str, str], tmp_path: Path, mlp_onnx: Path, filename: str
) -> None:
    """UP-06: the file is stored under its hash; the display name has no path parts."""
    data = mlp_onnx.read_bytes()

    response = _upload(client, data, filename)

    assert response.status_code == 201, response.text
    body = response.json()
    assert "/" not in body["name"] and "\\" not in body["name"]
    assert "\u202e" not in body["name"]
    assert 0 < len(body["name"].encode()) <= 255
    assert _blob(env, body["sha256"]).read_bytes() == data
    leaked = [p for p in tmp_path.rglob("*") if p.name in ("passwd", "win.ini")]
    assert leaked == []


# ---------------------------------------------------------------- reads


def test_get_returns_the_created_model(client: Any, mlp_onnx: Path) -> None:
    created = _upload(client, mlp_onnx.read_bytes()).json()

    response = client.get(f"/v1/models/{created['id']}")

    assert response.status_code == 200
    stamps = ("created_at", "updated_at")
    read = {k: v for k, v in response.json().items() if k not in stamps}
    assert read == {k: v for k, v in created.items() if k not in stamps}


def test_read_timestamps_carry_a_utc_offset(client: Any, mlp_onnx: Path) -> None:
    """Timestamps are `DateTime(timezone=True)`: a read says which zone, as the create did."""
    created = _upload(client, mlp_onnx.read_bytes()).json()

    read = client.get(f"/v1/models/{created['id']}").json()

    assert datetime.fromisoformat(read["created_at"]).utcoffset() == timedelta(0)
    assert datetime.fromisoformat(read["created_at"]) == datetime.fromisoformat(
        created["created_at"]
    )


def test_get_unknown_model_is_404_problem(client: Any) -> None:
    response = client.get(f"/v1/models/{uuid.uuid4()}")

    assert_problem(response, 404, "not_found")


def test_list_pages_walk_every_model_exactly_once(
    client: Any, mlp_onnx: Path, cnn_onnx: Path, transformer_onnx: Path
) -> None:
    created = [_upload(client, p.read_bytes()).json()["id"] for p in (mlp_onnx, cnn_onnx)]
    created += [_upload(client, transformer_onnx.read_bytes()).json()["id"]]
    created += [_upload(client, mlp_onnx.read_bytes()).json()["id"]]

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/models", params=params).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None or pages > 10:
            break

    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen)) == 4


def test_list_is_newest_first(client: Any, mlp_onnx: Path, cnn_onnx: Path) -> None:
    first = _upload(client, mlp_onnx.read_bytes()).json()["id"]
    second = _upload(client, cnn_onnx.read_bytes()).json()["id"]

    items = client.get("/v1/models").json()["items"]

    assert [m["id"] for m in items] == [second, first]


def test_invalid_cursor_is_400_problem(client: Any) -> None:
    response = client.get("/v1/models", params={"cursor": "not-a-cursor"})

    assert_problem(response, 400, "invalid_cursor")


@pytest.mark.parametrize("limit", [0, 100_000, -1])
def test_out_of_range_limit_is_422_problem(client: Any, limit: int) -> None:
    """API-03: page sizes are bounded."""
    response = client.get("/v1/models", params={"limit": limit})

    assert_problem(response, 422, "validation_error")


# ---------------------------------------------------------------- download and delete


def test_download_returns_the_exact_bytes_with_sha256_etag(client: Any, cnn_onnx: Path) -> None:
    data = cnn_onnx.read_bytes()
    created = _upload(client, data).json()

    response = client.get(f"/v1/models/{created['id']}/file")

    assert response.status_code == 200
    assert response.content == data
    assert response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response.headers["x-content-type-options"] == "nosniff"


def test_download_is_named_by_id_and_format_extension(client: Any, mlp_onnx: Path) -> None:
    created = _upload(client, mlp_onnx.read_bytes()).json()

    response = client.get(f"/v1/models/{created['id']}/file")

    assert f'filename="{created["id"]}.onnx"' in response.headers["content-disposition"]


def test_delete_is_204_then_404(client: Any, mlp_onnx: Path) -> None:
    created = _upload(client, mlp_onnx.read_bytes()).json()

    deleted = client.delete(f"/v1/models/{created['id']}")

    assert deleted.status_code == 204
    assert_problem(client.get(f"/v1/models/{created['id']}"), 404, "not_found")
    assert_problem(client.get(f"/v1/models/{created['id']}/file"), 404, "not_found")
    assert_problem(client.delete(f"/v1/models/{created['id']}"), 404, "not_found")


def test_same_bytes_twice_share_one_blob(client: Any, env: dict[str, str], mlp_onnx: Path) -> None:
    data = mlp_onnx.read_bytes()

    first = _upload(client, data).json()
    second = _upload(client, data).json()

    assert first["id"] != second["id"]
    assert first["sha256"] == second["sha256"]
    blobs = [p for p in (Path(env["MODELPRESS_DATA_DIR"]) / "storage" / "sha256").rglob("*")]
    assert [p for p in blobs if p.is_file()] == [_blob(env, first["sha256"])]


def test_deleting_one_of_two_sharing_models_keeps_the_other_downloadable(
    client: Any, mlp_onnx: Path
) -> None:
    data = mlp_onnx.read_bytes()
    first = _upload(client, data).json()
    second = _upload(client, data).json()

    client.delete(f"/v1/models/{first['id']}")

    response = client.get(f"/v1/models/{second['id']}/file")
    assert response.status_code == 200
    assert response.content == data
