"""`pickle_scan` and `torch_archive`: the bounded, fail-closed pickle walk and the members it
walks. Real torch artifacts pass; lookalike names, caps and parse errors are refused."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from app.core.errors import Unprocessable, UnsafePickle
from app.ml_models import archives, pickle_scan, torch_archive
from app.ml_models.formats import detect_format

TS = pickle_scan.TORCHSCRIPT_POLICY
PT2 = pickle_scan.PT2_POLICY


def _check(data: bytes, policy: pickle_scan.Policy = TS, ops: int | None = None) -> None:
    budget = pickle_scan.Budget() if ops is None else pickle_scan.Budget(ops=ops)
    pickle_scan.check(io.BytesIO(data), "The pickle", policy, budget, "")


def _global(module: str, name: str) -> bytes:
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."


# ---------------------------------------------------------------- real torch artifacts


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    class WithBuffer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)
            self.register_buffer("scale", torch.ones(3, dtype=torch.float16))

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return self.lin(x) * self.scale

    root = tmp_path_factory.mktemp("real")
    layer = torch.nn.TransformerEncoderLayer(32, 2, 64, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    torch.jit.save(torch.jit.script(encoder), root / "encoder.pt")
    kwargs = {"y": torch.ones(2, dtype=torch.int64)}
    program = torch.export.export(WithBuffer(), (torch.randn(2, 4),), kwargs)
    torch.export.save(program, root / "buffer.pt2")
    return {"torchscript": root / "encoder.pt", "pt2": root / "buffer.pt2"}


@pytest.mark.parametrize("kind", ["torchscript", "pt2"])
def test_real_torch_programs_pass(real: dict[str, Path], kind: str) -> None:
    assert detect_format(real[kind]).format == kind


def test_every_pickle_of_a_real_torchscript_archive_is_walked(real: dict[str, Path]) -> None:
    with zipfile.ZipFile(real["torchscript"]) as zf:
        infos = zf.infolist()
        root = infos[0].filename.split("/", 1)[0]
        walked = {i.filename for i in torch_archive.pickle_members(zf, infos, "torchscript", root)}

    pickles = {i.filename for i in infos if i.filename.endswith(("pkl", "debug_pkl"))}
    assert pickles and walked == pickles


# ---------------------------------------------------------------- exact allowlist


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("__torch__.torch.nn.modules.linear", "Linear"),
        ("__torch__", "M"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch", "FloatStorage"),
        ("torch", "bfloat16"),
        ("collections", "OrderedDict"),
        ("torch.jit._pickle", "build_intlist"),
    ],
)
def test_torchscript_names_that_are_allowed(module: str, name: str) -> None:
    _check(_global(module, name))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("__torch__x.os", "system"),
        ("__torch___", "M"),
        ("__torch__.__builtins__", "exec"),
        ("__torch__.m", "__reduce__"),
        ("__torch__.m-x", "M"),
        ("torch._utils", "__builtins__"),
        ("torch._utils", "_rebuild_tensor_v2.__globals__"),
        ("torch", "float32.__class__"),
        ("torch", "FloatStoragex"),
        ("torch", "load"),
        ("torch.jit._pickle", "__builtins__"),
        ("collections", "OrderedDictx"),
        ("builtins", "getattr"),
        ("torch.serialization", "load"),
    ],
)
def test_lookalike_names_are_refused(module: str, name: str) -> None:
    with pytest.raises(UnsafePickle) as info:
        _check(_global(module, name))

    assert info.value.extra["globals"] == [f"{module}.{name}"]


def test_pt2_pickles_may_not_name_torchscript_classes() -> None:
    with pytest.raises(UnsafePickle):
        _check(_global("__torch__.torch.nn.modules.linear", "Linear"), PT2)


def test_stack_global_of_a_non_string_is_refused() -> None:
    data = b"\x80\x04N\x8c\x06system\x93."  # STACK_GLOBAL(None, "system")

    with pytest.raises(UnsafePickle) as info:
        _check(data)

    assert info.value.extra["globals"] == ["<unresolvable STACK_GLOBAL>"]


@pytest.mark.parametrize("protocol", range(6))
def test_an_allowed_pickle_passes_in_every_protocol(protocol: int) -> None:
    import collections

    _check(pickle.dumps(collections.OrderedDict(a=(1, 2.0, "x", None, True)), protocol=protocol))


# ---------------------------------------------------------------- fail closed, bounded


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x80\x02).junk", "malformed_pickle"),  # bytes after the pickle that are none
        (b"\x80\x02", "malformed_pickle"),  # no STOP
        (b"\x80\x02h\x05.", "malformed_pickle"),  # a memo entry never written
        (b"\x80\x020.", "malformed_pickle"),  # POP of nothing
        (b"\x80\x02(\x85.", "malformed_pickle"),  # TUPLE1 across a mark
        (b"\x80\x02e.", "malformed_pickle"),  # APPENDS without a mark
        (b"\x80\x09N.", "malformed_pickle"),  # protocol 9
    ],
)
def test_a_pickle_that_does_not_parse_is_refused(data: bytes, code: str) -> None:
    with pytest.raises(Unprocessable) as info:
        _check(data)

    assert info.value.code == code


def test_the_opcode_budget_is_shared_by_every_pickle_of_an_upload() -> None:
    budget = pickle_scan.Budget(ops=1_000)
    member = b"\x80\x02" + b"N0" * 300 + b"N."
    pickle_scan.check(io.BytesIO(member), "first", TS, budget, "")

    with pytest.raises(Unprocessable) as info:
        pickle_scan.check(io.BytesIO(member), "second", TS, budget, "")

    assert info.value.code == "pickle_limits"


def test_the_byte_cap_ends_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickle_scan, "MAX_PICKLE_BYTES", 1_000)
    data = b"\x80\x02" + b"N0" * 1_000 + b"N."

    with pytest.raises(Unprocessable) as info:
        _check(data)

    assert info.value.code == "malformed_pickle"  # truncated at the cap: never a pass


def test_a_member_declaring_more_than_the_cap_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pickle_scan, "MAX_PICKLE_BYTES", 1_000)
    members = {"m/data.pkl": b"\x80\x02c__torch__\nM\n)\x81}b.", "m/code/__torch__/m.py": b"x"}
    members["m/constants.pkl"] = b"\x80\x02" + b"N0" * 1_000 + b")."
    path = tmp_path / "big.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)

    with pytest.raises(Unprocessable) as info:
        detect_format(path)

    assert info.value.code == "pickle_limits"


def test_a_declared_length_is_not_allocated() -> None:
    """BINBYTES8 declaring 2**62 bytes: refused as truncated, no allocation of that size."""
    with pytest.raises(Unprocessable) as info:
        _check(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"x" * 8)

    assert info.value.code == "malformed_pickle"


# ---------------------------------------------------------------- zip layouts torch writes


def test_an_onnx_zip_with_a_zip64_end_record_it_does_not_need_is_accepted(
    tmp_path: Path,
) -> None:
    """torch writes a zip64 end record into every archive; the shared end-record parser
    accepts one that agrees with the directory (and refuses one that lies)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m/model.onnx", b"\x08\x07\x3a\x00")
    data = buf.getvalue()
    cd_at, end_at = data.index(b"PK\x01\x02"), data.rindex(b"PK\x05\x06")
    record = b"PK\x06\x06" + struct.pack("<QHHII4Q", 44, 45, 45, 0, 0, 1, 1, end_at - cd_at, cd_at)
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, end_at, 1)
    path = tmp_path / "m.zip"
    path.write_bytes(data[:end_at] + record + locator + data[end_at:])

    listing = archives.check_onnx_archive(path)

    assert listing.model.name == "m/model.onnx"


@pytest.mark.parametrize(
    "members",
    [{"data.pkl": b"\x80\x02}."}, {"m/data.pkl": b"\x80\x02}.", "extra": b"x"}],
    ids=["no-folder", "one-member-outside"],
)
def test_a_zip_whose_members_are_not_all_in_one_folder_is_unsupported(
    tmp_path: Path, members: dict[str, bytes]
) -> None:
    from app.core.errors import UnsupportedModelFormat

    path = tmp_path / "flat.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)

    with pytest.raises(UnsupportedModelFormat):
        detect_format(path)
