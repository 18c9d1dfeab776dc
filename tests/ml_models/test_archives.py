"""ONNX archives (a zip or tar of one `.onnx` and its external data) at the API: a good archive
is accepted as ONNX, each hostile class is a 422 with its own `code` and leaves nothing behind
(MF-05, MF-10..12, MF-17)."""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import assert_problem

from app.core.errors import Unprocessable, UnsupportedModelFormat
from app.ml_models import archives
from app.ml_models.formats import ARCHIVE, detect_format


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny MatMul model saved with its weight in `weights.bin` (external data forced)."""
    import numpy as np

    onnx = pytest.importorskip("onnx")  # API-side tests run without the model libraries
    from onnx import TensorProto, helper, numpy_helper

    root = tmp_path_factory.mktemp("bundle")
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(
        model,
        str(root / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    return {n: (root / n).read_bytes() for n in ("model.onnx", "weights.bin")}


def _zip(members: dict[str, bytes], deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in members:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tf.addfile(info, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _patch_central(data: bytes, member: str, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite one field of `member`'s central directory entry."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46 : pos + 46 + name_len].decode() == member:
            struct.pack_into(fmt, out, pos + offset, value)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 1)
    raise AssertionError(member)


HOSTILE: dict[str, tuple[str, Callable[[dict[str, bytes]], bytes]]] = {
    "dotdot": ("archive_traversal", lambda b: _zip({**b, "../evil.bin": b"x"})),
    "absolute": ("archive_traversal", lambda b: _zip({**b, "/etc/evil": b"x"})),
    "backslash": ("archive_traversal", lambda b: _zip({**b, "..\\evil": b"x"})),
    "tar_dotdot": (
        "archive_traversal",
        lambda b: _tar(
            [_file("model.onnx"), _file("../weights.bin")], b | {"../weights.bin": b"x"}
        ),
    ),
    "symlink": (
        "archive_link",
        lambda b: _tar(
            [_file("model.onnx"), _special("weights.bin", tarfile.SYMTYPE, "/etc/passwd")], b
        ),
    ),
    "hardlink": (
        "archive_link",
        lambda b: _tar(
            [_file("model.onnx"), _special("weights.bin", tarfile.LNKTYPE, "model.onnx")], b
        ),
    ),
    "device": (
        "archive_link",
        lambda b: _tar([_file("model.onnx"), _special("weights.bin", tarfile.CHRTYPE)], b),
    ),
    "fifo": (
        "archive_link",
        lambda b: _tar([_file("model.onnx"), _special("weights.bin", tarfile.FIFOTYPE)], b),
    ),
    "duplicate": ("archive_duplicate", lambda b: _duplicate_zip(b)),
    "case_duplicate": ("archive_duplicate", lambda b: _zip({**b, "WEIGHTS.BIN": b"x"})),
    "file_and_folder": ("archive_duplicate", lambda b: _zip({**b, "weights.bin/x": b"x"})),
    "overlap": ("archive_duplicate", lambda b: _overlapping_zip(b)),
    "two_models": ("archive_unexpected_member", lambda b: _zip({**b, "b.onnx": b["model.onnx"]})),
    "outside_model_folder": (
        "archive_unexpected_member",
        lambda b: _zip({"m/model.onnx": b["model.onnx"], "weights.bin": b["weights.bin"]}),
    ),
    "odd_name": ("archive_unexpected_member", lambda b: _zip({**b, "we$ird\x07.bin": b"x"})),
    "declared_huge": (
        "archive_malformed",
        lambda b: _patch_central(_zip(b), "weights.bin", 24, "<I", 2**32 - 2),
    ),
    "bomb": ("archive_limits", lambda b: _zip({**b, "pad.bin": bytes(20_000_000)}, deflate=True)),
    "bomb_of_small_members": (
        "archive_limits",
        lambda b: _zip({**b, **{f"p{i}.bin": bytes(60_000) for i in range(200)}}, deflate=True),
    ),
    "bad_crc": ("archive_malformed", lambda b: _patch_central(_zip(b), "weights.bin", 16, "<I", 1)),
    "bad_deflate": ("archive_malformed", lambda b: _bad_deflate(b)),
    "tar_trailing_junk": (
        "archive_malformed",
        lambda b: _tar([_file("model.onnx"), _file("weights.bin")], b) + b"\x01" * 512,
    ),
    "pax_linkpath": ("archive_link", lambda b: _pax_linkpath(b)),
    "encrypted": (
        "archive_malformed",
        lambda b: _patch_central(_zip(b), "weights.bin", 8, "<H", 1),
    ),
}


def _duplicate_zip(b: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning):
        for name, data in [*b.items(), ("weights.bin", b"x" * 48)]:
            zf.writestr(name, data)
    return buf.getvalue()


def _overlapping_zip(b: dict[str, bytes]) -> bytes:
    """Two directory entries whose local data is the same bytes (the overlapping-file bomb)."""
    data = _zip({**b, "copy.bin": b["weights.bin"]})
    first = data.index(b"PK\x03\x04", 1)  # weights.bin's local header
    return _patch_central(data, "copy.bin", 42, "<I", first)


def _bad_deflate(b: dict[str, bytes]) -> bytes:
    data = _zip({**b, "x.bin": bytes(range(256)) * 64}, deflate=True)
    header = data.index(b"x.bin") + len(b"x.bin")  # local header name, then the deflate stream
    broken = bytearray(data)
    for i in range(header + 2, header + 40):
        broken[i] ^= 0x5A
    return bytes(broken)


def _pax_linkpath(b: dict[str, bytes]) -> bytes:
    info = _file("weights.bin")
    info.pax_headers = {"linkpath": "/etc/passwd"}
    return _tar([_file("model.onnx"), info], b)


def _write(tmp_path: Path, data: bytes, name: str = "upload.part") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- accepted


@pytest.mark.parametrize("layout", ["zip", "zip_deflated", "zip_folder", "tar", "tar_folder"])
def test_a_good_archive_is_onnx(bundle: dict[str, bytes], tmp_path: Path, layout: str) -> None:
    folder = {f"m/{k}": v for k, v in bundle.items()}
    data = {
        "zip": lambda: _zip(bundle),
        "zip_deflated": lambda: _zip(bundle, deflate=True),
        "zip_folder": lambda: _zip({"m/": b"", **folder}),
        "tar": lambda: _tar([_file("model.onnx"), _file("weights.bin")], bundle),
        "tar_folder": lambda: _tar(
            [_special("m", tarfile.DIRTYPE), _file("m/model.onnx"), _file("m/weights.bin")], folder
        ),
    }[layout]()

    detected = detect_format(_write(tmp_path, data))
    listing = archives.check_onnx_archive(tmp_path / "upload.part")

    assert (detected.format, detected.detail) == ("onnx", ARCHIVE)
    assert listing.relative(listing.model) == "model.onnx"
    assert sorted(listing.relative(m) for m in listing.files) == ["model.onnx", "weights.bin"]


# ---------------------------------------------------------------- refused


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_hostile_archive_has_its_code(
    bundle: dict[str, bytes], tmp_path: Path, case: str
) -> None:
    code, build = HOSTILE[case]
    path = _write(tmp_path, build(bundle))

    with pytest.raises(Unprocessable) as caught:
        detect_format(path)

    assert caught.value.code == code, str(caught.value)


@pytest.mark.parametrize("junk", ["before", "after"])
def test_a_zip_with_bytes_around_it_is_415_like_any_polyglot(
    bundle: dict[str, bytes], tmp_path: Path, junk: str
) -> None:
    data = b"\x08\x01" + _zip(bundle) if junk == "before" else _zip(bundle) + b"junk"

    with pytest.raises(UnsupportedModelFormat):
        detect_format(_write(tmp_path, data))


def test_too_many_members_is_refused_from_the_end_record(
    bundle: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBERS", 3)
    path = _write(tmp_path, _zip({**bundle, "a.bin": b"", "b.bin": b""}))
    opened: list[Any] = []
    monkeypatch.setattr(archives.zipfile, "ZipFile", lambda *a, **k: opened.append(a))

    with pytest.raises(Unprocessable) as caught:
        detect_format(path)

    assert caught.value.code == "archive_limits"
    assert opened == []  # refused before zipfile read the directory


def test_a_corrupt_torch_zip_is_422_not_500(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from networks import tiny_linear

    path = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(tiny_linear()), path)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        crc_entry = zf.getinfo(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    path.write_bytes(
        _patch_central(data, crc_entry.filename, 16, "<I", (crc_entry.CRC + 1) % 2**32)
    )

    with pytest.raises(Unprocessable) as caught:
        detect_format(path)

    assert caught.value.code == "archive_malformed"


# ---------------------------------------------------------------- through the API


def _left_behind(client: Any, env: dict[str, str], data: bytes) -> dict[str, Any]:
    storage = Path(env["MODELPRESS_DATA_DIR"]) / "storage"
    sha = hashlib.sha256(data).hexdigest()
    scratch = storage / "scratch"
    return {
        "scratch": sorted(p.name for p in scratch.rglob("*")) if scratch.exists() else [],
        "blob": (storage / "sha256" / sha[:2] / sha[2:4] / sha).exists(),
        "rows": client.get("/v1/models").json()["items"],
    }


@pytest.mark.parametrize("case", ["dotdot", "symlink", "bomb", "bad_crc", "overlap"])
def test_the_upload_route_answers_422_and_keeps_nothing(
    client: Any, env: dict[str, str], bundle: dict[str, bytes], case: str
) -> None:
    code, build = HOSTILE[case]
    data = build(bundle)

    response = client.post("/v1/models", files={"file": ("m.zip", data)})

    assert_problem(response, 422, code)
    assert _left_behind(client, env, data) == {"scratch": [], "blob": False, "rows": []}


def test_the_upload_route_accepts_an_archive_as_onnx(client: Any, bundle: dict[str, bytes]) -> None:
    response = client.post("/v1/models", files={"file": ("m.zip", _zip(bundle))})

    assert response.status_code == 201, response.text
    assert response.json()["format"] == "onnx"


def test_an_archived_model_downloads_as_the_archive(client: Any, bundle: dict[str, bytes]) -> None:
    data = _zip(bundle)
    model = client.post("/v1/models", files={"file": ("m.zip", data)}).json()

    response = client.get(f"/v1/models/{model['id']}/file")

    assert response.status_code == 200, response.text
    assert response.content == data
    assert f'filename="{model["id"]}.zip"' in response.headers["content-disposition"]
