"""`detect_format` on real torch/ONNX artifacts and on hostile files generated at test time.

Every code-execution payload only touches a per-test canary path; each test that builds one
asserts the canary does not exist after the check ran (docs/reliability.md §1.3).
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import sys
import types
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import Unprocessable, UnsafePickle, UnsupportedModelFormat
from app.ml_models.formats import detect_format

# ---------------------------------------------------------------- artifacts made with torch


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny MLP saved every way torch can save it."""
    import torch
    from networks import tiny_linear

    root = tmp_path_factory.mktemp("torch-files")
    torch.manual_seed(0)
    module = tiny_linear()
    paths = {name: root / name for name in ("script.pt", "export.pt2", "full.pt", "sd.pt")}
    torch.jit.save(torch.jit.script(module), paths["script.pt"])
    torch.export.save(torch.export.export(module, (torch.randn(2, 4),)), paths["export.pt2"])
    torch.save(module, paths["full.pt"])
    torch.save(module.state_dict(), paths["sd.pt"])
    return paths


# ---------------------------------------------------------------- hostile payloads


class Reducer:
    """Pickles as `callable(*args)`: what an attacker's `__reduce__` makes the loader call."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _payloads(canary: Path) -> dict[str, tuple[Reducer, str]]:
    """MF-01/MF-02 payloads, each with the global the scanner must name."""
    touch = f"open({str(canary)!r}, 'w').close()"
    return {
        "os.system": (Reducer(os.system, (f"touch {canary}",)), f"{os.name}.system"),
        "builtins.exec": (Reducer(builtins.exec, (touch,)), "builtins.exec"),
        "builtins.eval": (Reducer(builtins.eval, (touch,)), "builtins.eval"),
        "subprocess.Popen": (
            Reducer(subprocess.Popen, (["touch", str(canary)],)),
            "subprocess.Popen",
        ),
    }


PAYLOADS = ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"]


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / f"canary-{uuid.uuid4().hex}"


def _pickled(obj: object) -> bytes:
    """Protocol 2 as torch writes it, with Python 3 module names kept (no `__builtin__`)."""
    return pickle.dumps(obj, protocol=2, fix_imports=False)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rewrite_zip(
    src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None
) -> Path:
    """Copy a torch zip, replacing members by name suffix; compression types are kept."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(zipfile.ZipInfo(name), data)
    return dst


def _root(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()[0].split("/", 1)[0]


# ---------------------------------------------------------------- allowed formats


@pytest.mark.parametrize("fixture", ["mlp_onnx", "cnn_onnx", "transformer_onnx"])
def test_onnx_models_are_onnx(request: pytest.FixtureRequest, fixture: str) -> None:
    path = request.getfixturevalue(fixture)

    detected = detect_format(path)

    assert detected.format == "onnx"


def test_torchscript_archive_is_torchscript(torch_files: dict[str, Path]) -> None:
    detected = detect_format(torch_files["script.pt"])

    assert detected.format == "torchscript"


def test_torch_export_program_is_pt2(torch_files: dict[str, Path]) -> None:
    detected = detect_format(torch_files["export.pt2"])

    assert detected.format == "pt2"


def test_format_comes_from_bytes_not_the_file_name(
    torch_files: dict[str, Path], tmp_path: Path
) -> None:
    """MF-04: a TorchScript archive named like a state_dict is still classified by its layout."""
    renamed = _write(tmp_path / "weights.pth", torch_files["script.pt"].read_bytes())

    detected = detect_format(renamed)

    assert detected.format == "torchscript"


# ---------------------------------------------------------------- pickles


def test_full_pickled_module_is_unsafe_pickle(torch_files: dict[str, Path]) -> None:
    """MF-04: `torch.save(model)` is refused, naming the classes it would import, with a hint."""
    with pytest.raises(UnsafePickle) as info:
        detect_format(torch_files["full.pt"])

    assert info.value.status == 422
    assert "torch.nn.modules.container.Sequential" in info.value.extra["globals"]
    assert "torch.export" in info.value.detail


def test_state_dict_without_graph_is_refused(torch_files: dict[str, Path]) -> None:
    with pytest.raises(Unprocessable) as info:
        detect_format(torch_files["sd.pt"])

    assert info.value.status == 422
    assert info.value.code == "state_dict_without_graph"


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_raw_pickle_payload_is_refused(
    tmp_path: Path, canary: Path, payload: str, protocol: int
) -> None:
    """MF-01/MF-02: a raw pickle is refused without being unpickled."""
    obj, _ = _payloads(canary)[payload]
    path = _write(tmp_path / "model.pt", pickle.dumps(obj, protocol=protocol))

    with pytest.raises(UnsafePickle) as info:
        detect_format(path)

    assert info.value.code == "unsafe_pickle"
    assert not canary.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_raw_pickle_refusal_lists_its_globals(tmp_path: Path, canary: Path, payload: str) -> None:
    """MF-01: the refusal names the globals the pickle imports (e.g. `posix.system`)."""
    obj, expected = _payloads(canary)[payload]
    path = _write(tmp_path / "model.pt", _pickled(obj))

    with pytest.raises(UnsafePickle) as info:
        detect_format(path)

    assert expected in info.value.extra.get("globals", [])
    assert not canary.exists()


def test_protocol_0_pickle_is_unsupported(tmp_path: Path, canary: Path) -> None:
    """MF-07: a text-protocol pickle is not a model format at all."""
    obj, _ = _payloads(canary)["os.system"]
    path = _write(tmp_path / "model.pt", pickle.dumps(obj, protocol=0))

    with pytest.raises(UnsupportedModelFormat) as info:
        detect_format(path)

    assert info.value.status == 415
    assert not canary.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_torchscript_with_hostile_data_pkl_is_refused(
    torch_files: dict[str, Path], tmp_path: Path, canary: Path, payload: str
) -> None:
    """MF-01/MF-02: the payload inside a TorchScript archive's data.pkl is found and named."""
    obj, expected = _payloads(canary)[payload]
    evil = _rewrite_zip(
        torch_files["script.pt"], tmp_path / "evil.pt", {"/data.pkl": _pickled(obj)}
    )

    with pytest.raises(UnsafePickle) as info:
        detect_format(evil)

    assert info.value.extra["globals"] == [expected]
    assert not canary.exists()


def test_torchscript_with_hostile_constants_pkl_is_refused(
    torch_files: dict[str, Path], tmp_path: Path, canary: Path
) -> None:
    obj, expected = _payloads(canary)["os.system"]
    evil = _rewrite_zip(
        torch_files["script.pt"], tmp_path / "evil.pt", {"/constants.pkl": _pickled(obj)}
    )

    with pytest.raises(UnsafePickle) as info:
        detect_format(evil)

    assert info.value.extra["globals"] == [expected]
    assert not canary.exists()


def _memoized_stack_global(canary: Path) -> bytes:
    """Protocol 4: module and name pushed, memoized, popped, then fetched back with BINGET."""
    s = lambda text: b"\x8c" + bytes([len(text)]) + text.encode()  # noqa: E731  SHORT_BINUNICODE
    module = os.system.__module__
    return (
        b"\x80\x04"
        + s(module) + b"\x94"  # MEMOIZE as 0
        + s("system") + b"\x94"  # MEMOIZE as 1
        + b"00"  # POP POP: nothing left on the stack to read the names from
        + b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        + s(f"touch {canary}") + b"\x85R."  # TUPLE1 REDUCE STOP
    )  # fmt: skip


def _unusual_module_class() -> object:
    """An instance of a class living in a made-up nested module, pickled by reference."""
    parent, child = types.ModuleType("zz_unusual"), types.ModuleType("zz_unusual.plugins")
    outer = type("Outer", (), {})
    gadget = type("Gadget", (), {"__module__": "zz_unusual.plugins"})
    gadget.__qualname__ = "Outer.Gadget"
    outer.Gadget = gadget  # type: ignore[attr-defined]
    child.Outer = outer  # type: ignore[attr-defined]
    parent.plugins = child  # type: ignore[attr-defined]
    sys.modules.update({"zz_unusual": parent, "zz_unusual.plugins": child})
    return gadget()


def test_stack_global_with_memoized_strings_is_refused(
    torch_files: dict[str, Path], tmp_path: Path, canary: Path
) -> None:
    evil = _rewrite_zip(
        torch_files["script.pt"],
        tmp_path / "evil.pt",
        {"/data.pkl": _memoized_stack_global(canary)},
    )

    with pytest.raises(UnsafePickle) as info:
        detect_format(evil)

    assert info.value.extra["globals"] == [f"{os.system.__module__}.system"]
    assert not canary.exists()


@pytest.mark.parametrize("protocol", [4, 5])
def test_stack_global_of_class_in_unusual_module_is_refused(
    torch_files: dict[str, Path], tmp_path: Path, protocol: int
) -> None:
    data = pickle.dumps(_unusual_module_class(), protocol=protocol)
    evil = _rewrite_zip(torch_files["script.pt"], tmp_path / "evil.pt", {"/data.pkl": data})

    with pytest.raises(UnsafePickle) as info:
        detect_format(evil)

    assert info.value.extra["globals"] == ["zz_unusual.plugins.Outer.Gadget"]


def test_pt2_with_raw_pickle_sample_inputs_is_refused(
    torch_files: dict[str, Path], tmp_path: Path, canary: Path
) -> None:
    """MF-19: `data/sample_inputs/model.pt` carrying a payload is refused by the pre-scan."""
    obj, expected = _payloads(canary)["os.system"]
    evil = _rewrite_zip(
        torch_files["export.pt2"],
        tmp_path / "evil.pt2",
        {"sample_inputs/model.pt": _pickled(obj)},
    )

    with pytest.raises(UnsafePickle) as info:
        detect_format(evil)

    assert info.value.extra["globals"] == [expected]
    assert not canary.exists()


def test_pt2_with_torch_saved_hostile_sample_inputs_is_refused(
    torch_files: dict[str, Path], tmp_path: Path, canary: Path
) -> None:
    """MF-19: torch.export.save writes sample inputs as a nested torch.save zip; one whose
    data.pkl carries a payload must be refused too, not only a bare pickle."""
    import torch

    obj, _ = _payloads(canary)["os.system"]
    nested = io.BytesIO()
    torch.save(obj, nested)
    evil = _rewrite_zip(
        torch_files["export.pt2"],
        tmp_path / "evil.pt2",
        {"sample_inputs/model.pt": nested.getvalue()},
    )

    with pytest.raises(UnsafePickle):
        detect_format(evil)

    assert not canary.exists()


def test_pt2_with_hostile_constants_pickle_is_refused(
    torch_files: dict[str, Path], tmp_path: Path, canary: Path
) -> None:
    """MF-19: a pickled constant under data/constants/ is scanned like any other pickle."""
    obj, expected = _payloads(canary)["os.system"]
    src = torch_files["export.pt2"]
    member = f"{_root(src)}/data/constants/tensor_0"
    evil = _rewrite_zip(src, tmp_path / "evil.pt2", {}, add={member: _pickled(obj)})

    with pytest.raises(UnsafePickle) as info:
        detect_format(evil)

    assert info.value.extra["globals"] == [expected]
    assert not canary.exists()
