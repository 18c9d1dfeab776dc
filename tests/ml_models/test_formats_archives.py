"""`detect_format` on malformed archives and on bytes that are no model at all (MF-05, MF-12,
MF-17): the structural checks answer before any loader could see the file."""

from __future__ import annotations

import pickle
import random
import struct
import uuid
import zipfile
from pathlib import Path

import pytest

from app.core.errors import Unprocessable, UnsafePickle, UnsupportedModelFormat
from app.ml_models.formats import MAX_MEMBERS, detect_format


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from networks import tiny_linear

    root = tmp_path_factory.mktemp("torch-archives")
    torch.manual_seed(0)
    module = tiny_linear()
    paths = {"script.pt": root / "script.pt", "export.pt2": root / "export.pt2"}
    torch.jit.save(torch.jit.script(module), paths["script.pt"])
    torch.export.save(torch.export.export(module, (torch.randn(2, 4),)), paths["export.pt2"])
    return paths


def _copy_zip(
    src: Path, dst: Path, *, deflate: str | None = None, extra: dict | None = None
) -> Path:
    """Copy a torch zip; deflate the members whose name ends with `deflate`; add `extra`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if deflate and info.filename.endswith(deflate):
                info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, data)
        for name, data in (extra or {}).items():
            zout.writestr(zipfile.ZipInfo(name), data)
    return dst


def _root(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()[0].split("/", 1)[0]


def _declare_size(path: Path, member: str, size: int) -> None:
    """Patch the central directory so that `member` claims `size` uncompressed bytes."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, pos + 24, size)
            path.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not in the central directory")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- archive limits (MF-05)


@pytest.mark.parametrize(
    ("source", "member"),
    [("script.pt", "/data/0"), ("export.pt2", "/data/weights/weight_0")],
)
def test_deflated_tensor_member_is_archive_limits(
    torch_files: dict[str, Path], tmp_path: Path, source: str, member: str
) -> None:
    """MF-05: torch writes tensors stored; a deflated one is refused before any torch call."""
    archive = _copy_zip(torch_files[source], tmp_path / source, deflate=member)

    with pytest.raises(Unprocessable) as info:
        detect_format(archive)

    assert info.value.status == 422
    assert info.value.code == "archive_limits"


def test_deflated_code_member_over_the_ratio_is_archive_limits(
    torch_files: dict[str, Path], tmp_path: Path
) -> None:
    """MF-05: TorchScript source may be deflated, but not as a decompression bomb."""
    src = torch_files["script.pt"]
    bomb = zipfile.ZipInfo(f"{_root(src)}/code/__torch__/bomb.py")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    archive = _copy_zip(src, tmp_path / "bomb.pt")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(bomb, b" " * 2_000_000)

    with pytest.raises(Unprocessable) as info:
        detect_format(archive)

    assert info.value.code == "archive_limits"


def test_member_declaring_more_bytes_than_the_file_is_archive_limits(
    torch_files: dict[str, Path], tmp_path: Path
) -> None:
    """MF-05: a small member that declares gigabytes is refused from the central directory."""
    src = torch_files["script.pt"]
    archive = _copy_zip(src, tmp_path / "liar.pt")
    _declare_size(archive, f"{_root(src)}/data/0", 0x7FFF_FFFF)

    with pytest.raises(Unprocessable) as info:
        detect_format(archive)

    assert info.value.code == "archive_limits"


def test_too_many_members_is_archive_limits(torch_files: dict[str, Path], tmp_path: Path) -> None:
    """MF-05: an archive of tens of thousands of tiny members is refused."""
    src = torch_files["script.pt"]
    root = _root(src)
    extra = {f"{root}/extra/{i}": b"" for i in range(MAX_MEMBERS + 1)}
    archive = _copy_zip(src, tmp_path / "many.pt", extra=extra)

    with pytest.raises(Unprocessable) as info:
        detect_format(archive)

    assert info.value.code == "archive_limits"


# ---------------------------------------------------------------- traversal (MF-12)


@pytest.mark.parametrize(
    "member",
    ["../x", "{root}/../../x", "/etc/x", "{root}\\..\\x"],
    ids=["dotdot", "nested-dotdot", "absolute", "backslash"],
)
def test_unsafe_member_path_is_archive_traversal(
    torch_files: dict[str, Path], tmp_path: Path, member: str
) -> None:
    src = torch_files["script.pt"]
    name = member.format(root=_root(src))
    archive = _copy_zip(src, tmp_path / "traversal.pt", extra={name: b"x"})

    with pytest.raises(Unprocessable) as info:
        detect_format(archive)

    assert info.value.status == 422
    assert info.value.code == "archive_traversal"


# ---------------------------------------------------------------- not a model (415)


@pytest.mark.parametrize(
    "members",
    [{"docs/readme.txt": b"hello"}, {"readme.txt": b"hello", "photo.jpg": b"\xff\xd8\xff"}],
    ids=["one-folder", "flat"],
)
def test_zip_without_torch_layout_is_unsupported(tmp_path: Path, members: dict) -> None:
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)

    with pytest.raises(UnsupportedModelFormat) as info:
        detect_format(path)

    assert info.value.status == 415
    assert info.value.code == "unsupported_model_format"


JUNK = {
    "random": bytes(random.Random(7).randrange(1, 256) for _ in range(4096)).replace(b"\x80", b"1"),
    "html": b"<!DOCTYPE html><html><head><title>model</title></head><body>hi</body></html>\n",
    "one-nul": b"\x00",
    "newline": b"\n",
    "zip-magic-only": b"PK\x03\x04",
    "zip-magic-then-junk": b"PK\x03\x04" + b"\x00" * 64,
    "pickle-magic-only": b"\x80",
    "text": b"this is a model, trust me",
}


@pytest.mark.parametrize("name", list(JUNK))
def test_bytes_that_are_no_model_are_unsupported(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / "model.onnx", JUNK[name])

    with pytest.raises(UnsupportedModelFormat) as info:
        detect_format(path)

    assert info.value.status == 415


# ---------------------------------------------------------------- polyglots (MF-17)


def test_onnx_with_trailing_junk_is_not_onnx(mlp_onnx: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "model.onnx", mlp_onnx.read_bytes() + b"\xff\xfe trailing junk")

    with pytest.raises(UnsupportedModelFormat):
        detect_format(path)


def test_onnx_appended_to_a_pickle_is_refused(mlp_onnx: Path, tmp_path: Path) -> None:
    canary = tmp_path / f"canary-{uuid.uuid4().hex}"
    payload = pickle.dumps(("touch", str(canary)), protocol=2)
    path = _write(tmp_path / "model.onnx", payload + mlp_onnx.read_bytes())

    with pytest.raises(UnsafePickle):
        detect_format(path)

    assert not canary.exists()


def test_torch_zip_with_trailing_junk_is_unsupported(
    torch_files: dict[str, Path], tmp_path: Path
) -> None:
    """MF-17: the format is decided by a strict parse; a zip followed by junk is ambiguous."""
    data = torch_files["script.pt"].read_bytes() + b"JUNK" * 16
    path = _write(tmp_path / "model.pt", data)

    with pytest.raises(UnsupportedModelFormat):
        detect_format(path)
