"""Refused model uploads: each answers a problem+json at once and leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.core.config import get_settings
from app.main import create_app

HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n"
SMALL_LIMIT = 1024


@pytest.fixture(scope="module")
def torch_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A TorchScript archive and a pickled module (`torch.save(model)`) of the same MLP."""
    import torch
    from networks import tiny_linear

    module = tiny_linear()
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    torch.jit.save(torch.jit.script(module), path)
    pickled = io.BytesIO()
    torch.save(module, pickled)
    return {"torchscript": path.read_bytes(), "pickled": pickled.getvalue()}


@pytest.fixture
def small_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client whose upload limit is 1 KiB."""
    monkeypatch.setenv("MODELPRESS_MAX_UPLOAD_BYTES", str(SMALL_LIMIT))
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        yield test_client


class Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _upload(client: Any, data: bytes, filename: str = "model.bin", **fields: str) -> Any:
    files = {"file": (filename, data, "application/octet-stream")}
    return client.post("/v1/models", files=files, data=fields)


def _left_behind(client: Any, env: dict[str, str], data: bytes) -> dict[str, Any]:
    """What a refused upload could have left: scratch files, a blob, a row."""
    storage = Path(env["MODELPRESS_DATA_DIR"]) / "storage"
    sha = hashlib.sha256(data).hexdigest()
    scratch = storage / "scratch"
    return {
        "scratch": sorted(p.name for p in scratch.rglob("*")) if scratch.exists() else [],
        "blob": (storage / "sha256" / sha[:2] / sha[2:4] / sha).exists(),
        "rows": client.get("/v1/models").json()["items"],
    }


NOTHING = {"scratch": [], "blob": False, "rows": []}


# ---------------------------------------------------------------- refusals


def test_pickled_module_is_422_unsafe_pickle_with_export_hint(
    client: Any, torch_bytes: dict[str, bytes]
) -> None:
    """MF-04: `torch.save(model)` is refused with a hint to export instead."""
    response = _upload(client, torch_bytes["pickled"], "model.pt")

    body = assert_problem(response, 422, "unsafe_pickle")
    assert "torch.export" in body["detail"]
    assert "torch.nn.modules.container.Sequential" in body["globals"]


def test_raw_pickle_payload_is_422_and_never_runs(client: Any, tmp_path: Path) -> None:
    """MF-01: a pickle whose `__reduce__` calls os.system is refused; the canary never appears."""
    canary = tmp_path / f"canary-{uuid.uuid4().hex}"

    response = _upload(client, pickle.dumps(Touch(canary), protocol=2), "model.pt")

    assert_problem(response, 422, "unsafe_pickle")
    assert not canary.exists()


@pytest.mark.parametrize(
    "data",
    [b"\x00\x01\x02 definitely not a model" * 10, HTML],
    ids=["junk", "html"],
)
def test_unknown_bytes_are_415(client: Any, data: bytes) -> None:
    """UP-07: HTML sent as application/octet-stream is still not a model."""
    response = _upload(client, data, "model.onnx")

    assert_problem(response, 415, "unsupported_model_format")


def test_torchscript_without_input_shapes_is_422(
    client: Any, torch_bytes: dict[str, bytes]
) -> None:
    response = _upload(client, torch_bytes["torchscript"], "model.pt")

    body = assert_problem(response, 422, "input_shapes_required")
    assert "input_shapes" in body["detail"]


@pytest.mark.parametrize("shapes", ["not json", "[", "42", "[]", "{}", '"x"'])
def test_malformed_input_shapes_are_422(
    client: Any, torch_bytes: dict[str, bytes], shapes: str
) -> None:
    response = _upload(client, torch_bytes["torchscript"], "model.pt", input_shapes=shapes)

    assert_problem(response, 422, "invalid_input_shapes")


@pytest.mark.parametrize(
    "shapes", ["[[0, 4]]", "[[1, -4]]", '[[1, "a"]]', "[[1.5, 4]]", "[[true]]"]
)
def test_input_shapes_with_bad_dimensions_are_422(
    client: Any, torch_bytes: dict[str, bytes], shapes: str
) -> None:
    response = _upload(client, torch_bytes["torchscript"], "model.pt", input_shapes=shapes)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_upload_over_the_limit_is_413(small_client: Any, mlp_onnx: Path) -> None:
    """UP-02: a file over MODELPRESS_MAX_UPLOAD_BYTES is refused."""
    response = _upload(small_client, mlp_onnx.read_bytes(), "model.onnx")

    assert_problem(response, 413, "payload_too_large")


def test_upload_at_the_limit_is_not_413(small_client: Any) -> None:
    response = _upload(small_client, b"\x01" * SMALL_LIMIT, "model.onnx")

    assert_problem(response, 415, "unsupported_model_format")


def test_empty_file_is_422_empty_file(client: Any) -> None:
    """UP-01."""
    response = _upload(client, b"", "model.onnx")

    assert_problem(response, 422, "empty_file")


def test_body_without_file_part_is_422_missing_file(client: Any) -> None:
    response = client.post("/v1/models", data={"name": "x"}, files={"other": ("a", b"1")})

    assert_problem(response, 422, "missing_file")


def test_non_multipart_body_is_400(client: Any, mlp_onnx: Path) -> None:
    response = client.post(
        "/v1/models",
        content=mlp_onnx.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    )

    assert_problem(response, 400, "bad_request")


# ---------------------------------------------------------------- nothing left behind


REFUSALS = {
    "pickle": lambda b: (b["pickled"], {}),
    "unknown": lambda b: (HTML, {}),
    "empty": lambda b: (b"", {}),
    "no-shapes": lambda b: (b["torchscript"], {}),
    "bad-shapes": lambda b: (b["torchscript"], {"input_shapes": "[[0]]"}),
}


@pytest.mark.parametrize("kind", list(REFUSALS))
def test_refused_upload_leaves_nothing_behind(
    client: Any, env: dict[str, str], torch_bytes: dict[str, bytes], kind: str
) -> None:
    data, fields = REFUSALS[kind](torch_bytes)

    response = _upload(client, data, "model.pt", **fields)

    assert 400 <= response.status_code < 500
    assert _left_behind(client, env, data) == NOTHING


def test_too_large_upload_leaves_nothing_behind(
    small_client: Any, env: dict[str, str], mlp_onnx: Path
) -> None:
    """UP-02: the partial `.part` file is removed."""
    data = mlp_onnx.read_bytes()

    response = _upload(small_client, data, "model.onnx")

    assert response.status_code == 413
    assert _left_behind(small_client, env, data) == NOTHING


def test_accepted_upload_leaves_no_scratch(
    client: Any, env: dict[str, str], mlp_onnx: Path
) -> None:
    data = mlp_onnx.read_bytes()

    response = _upload(client, data, "model.onnx")

    assert response.status_code == 201
    assert _left_behind(client, env, data)["scratch"] == []


# ---------------------------------------------------------------- request framing (UP-02, UP-03)


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "hostile-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_chunked_upload_over_the_limit_is_413(small_client: Any, mlp_onnx: Path) -> None:
    """UP-02: a body without Content-Length is capped while it streams."""
    body, content_type = _multipart(mlp_onnx.read_bytes())
    chunks = (body[i : i + 512] for i in range(0, len(body), 512))

    response = small_client.post(
        "/v1/models", content=chunks, headers={"content-type": content_type}
    )

    assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize("length", ["-1", "abc", "99999999999999999999"])
def test_invalid_content_length_is_400(client: Any, mlp_onnx: Path, length: str) -> None:
    """UP-03: a negative, non-numeric or absurd Content-Length is refused, not trusted."""
    body, content_type = _multipart(mlp_onnx.read_bytes())

    response = client.post(
        "/v1/models",
        content=body,
        headers={"content-type": content_type, "content-length": length},
    )

    assert response.status_code in (400, 413), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
