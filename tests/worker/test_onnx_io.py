"""worker/onnx_io.py on tiny real models: every place a tensor can sit is held to the model's
folder (MF-10, MF-11, MF-15), a bare file references nothing, and external data forced on a tiny
model round-trips through save, archive, extraction and ONNX Runtime."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.core.errors import JobFailure
from worker import onnx_io

FEEDS = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}


def _weight(name: str = "w") -> TensorProto:
    return numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), name)


def _model(extra_nodes: list | None = None, **graph: object) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), *(extra_nodes or [])]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
        [_weight()],
        **graph,  # type: ignore[arg-type]
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _point(tensor: TensorProto, location: str, **entries: str) -> TensorProto:
    """Make `tensor` read its bytes from `location` (as a hostile model would)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **entries}.items():
        tensor.external_data.add(key=key, value=value)
    return tensor


def _constant(name: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=_weight(name + "_v"))


def _in_initializer(model: onnx.ModelProto, loc: str) -> None:
    _point(model.graph.initializer[0], loc)


def _in_constant(model: onnx.ModelProto, loc: str) -> None:
    node = _constant("c")
    _point(node.attribute[0].t, loc)
    model.graph.node.append(node)


def _in_sparse(model: onnx.ModelProto, loc: str) -> None:
    values = numpy_helper.from_array(np.ones(2, dtype=np.float32), "s")
    indices = numpy_helper.from_array(np.array([0, 5], dtype=np.int64), "s_i")
    sparse = helper.make_sparse_tensor(_point(values, loc), indices, [4, 3])
    model.graph.sparse_initializer.append(sparse)


def _in_subgraph(model: onnx.ModelProto, loc: str) -> None:
    branch = helper.make_graph(
        [_constant("t")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4, 3])],
    )
    _point(branch.node[0].attribute[0].t, loc)
    cond = helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("b", 9, [], [1]))
    model.graph.node.extend(
        [cond, helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)]
    )


def _in_function(model: onnx.ModelProto, loc: str) -> None:
    node = _constant("f")
    _point(node.attribute[0].t, loc)
    model.functions.append(
        helper.make_function("local", "F", [], ["f"], [node], [helper.make_opsetid("", 17)])
    )


KINDS: dict[str, Callable[[onnx.ModelProto, str], None]] = {
    "initializer": _in_initializer,
    "constant": _in_constant,
    "sparse_initializer": _in_sparse,
    "subgraph": _in_subgraph,
    "function": _in_function,
}
LOCATIONS = ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "C:\\secret", "a\x00b", ""]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 48)  # what an escape would read
    inner = tmp_path / "model"
    (inner / "sub").mkdir(parents=True)
    (inner / "ok.bin").write_bytes(np.ones(12, dtype=np.float32).tobytes())
    return inner


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_reference_outside_the_folder_is_refused(folder: Path, kind: str, location: str) -> None:
    model = _model()
    KINDS[kind](model, location)

    with pytest.raises(JobFailure) as caught:
        onnx_io.check_external_refs(model, folder)

    assert caught.value.code == "external_data_path"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_bare_model_may_reference_nothing(folder: Path, kind: str) -> None:
    model = _model()
    KINDS[kind](model, "ok.bin")  # inside the folder, yet a bare upload has no folder
    onnx.save_model(model, str(folder / "bare.onnx"))

    with pytest.raises(JobFailure) as caught:
        onnx_io.load_model(folder / "bare.onnx", bundled=False)

    assert caught.value.code == "external_data_not_supported"
    assert onnx_io.check_external_refs(model, folder) == {"ok.bin"}


def test_links_missing_files_ranges_and_extra_keys_are_refused(folder: Path) -> None:
    os.symlink(folder.parent / "secret.bin", folder / "link.bin")
    os.link(folder / "ok.bin", folder / "hard.bin")
    os.symlink(folder.parent, folder / "up")
    cases = {
        "link.bin": {},
        "hard.bin": {},  # ok.bin now has two links as well
        "up/secret.bin": {},
        "missing.bin": {},
        "sub": {},
    }
    for location, entries in cases.items():
        model = _model()
        _point(model.graph.initializer[0], location, **entries)
        with pytest.raises(JobFailure) as caught:
            onnx_io.check_external_refs(model, folder)
        assert caught.value.code == "external_data_path", location
    os.unlink(folder / "hard.bin")
    for entries in ({"offset": "40", "length": "48"}, {"length": "-1"}, {"basepath": "/"}):
        model = _model()
        _point(model.graph.initializer[0], "ok.bin", **entries)
        with pytest.raises(JobFailure) as caught:
            onnx_io.check_external_refs(model, folder)
        assert caught.value.code == "external_data_path", entries


def _outputs(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, FEEDS)[0])


def test_external_data_forced_on_a_tiny_model_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "0")
    expected = FEEDS["x"] @ numpy_helper.to_array(_weight())
    model = _model()
    onnx_io.save_model(model, tmp_path / "a.onnx")

    assert (tmp_path / "a.onnx.data").stat().st_size == 48
    assert model.graph.initializer[0].data_location == TensorProto.DEFAULT  # caller's copy kept
    np.testing.assert_allclose(_outputs(tmp_path / "a.onnx"), expected, rtol=1e-6)
    loaded = onnx_io.load_model(tmp_path / "a.onnx")
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), _weight_a())
    members = onnx_io.write_archive(tmp_path / "a.onnx", tmp_path / "a.zip")
    assert members == ["model.onnx", "a.onnx.data"]
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    staged = tmp_path / "input" / "model.onnx"
    staged.parent.mkdir()
    staged.write_bytes((tmp_path / "a.zip").read_bytes())
    path, bundled = onnx_io.stage(staged)
    assert bundled and path == tmp_path / "input" / "model" / "model.onnx"
    np.testing.assert_allclose(_outputs(path), expected, rtol=1e-6)


def _weight_a() -> np.ndarray:
    return numpy_helper.to_array(_weight())


def test_normalize_packs_or_inlines_by_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "0")
    onnx.save_model(_model(), str(tmp_path / "inline.onnx"))
    external = onnx_io.normalize(tmp_path / "inline.onnx", tmp_path / "big")
    assert onnx_io.data_files(external) == [tmp_path / "big" / "model.onnx.data"]

    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, str(10**9))
    inline = onnx_io.normalize(external, tmp_path / "small")

    assert onnx_io.data_files(inline) == []
    np.testing.assert_allclose(_outputs(inline), _outputs(tmp_path / "inline.onnx"))


def _bundle(tmp_path: Path) -> dict[str, bytes]:
    onnx.save_model(
        _model(), str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.bin",
        size_threshold=0,
    )  # fmt: skip
    return {
        "model.onnx": (tmp_path / "m.onnx").read_bytes(),
        "w.bin": (tmp_path / "w.bin").read_bytes(),
    }


def test_staging_refuses_an_archive_member_the_model_does_not_use(tmp_path: Path) -> None:
    members = {**_bundle(tmp_path), "stowaway.bin": b"x"}
    staged = tmp_path / "input" / "model.onnx"
    staged.parent.mkdir()
    with zipfile.ZipFile(staged, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)

    with pytest.raises(JobFailure) as caught:
        onnx_io.stage(staged)

    assert caught.value.code == "archive_unexpected_member"


def test_extraction_rechecks_and_writes_nothing_outside(tmp_path: Path) -> None:
    members = _bundle(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in [*members.items(), ("../escaped.bin", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    staged = tmp_path / "input" / "model.onnx"
    staged.parent.mkdir()
    staged.write_bytes(buf.getvalue())

    with pytest.raises(JobFailure) as caught:
        onnx_io.stage(staged)

    assert caught.value.code == "archive_traversal"
    assert not (tmp_path / "input" / "escaped.bin").exists()
    assert list((tmp_path / "input" / "model").iterdir()) == []


def test_a_tar_archive_stages_and_runs(tmp_path: Path) -> None:
    members = _bundle(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(f"folder/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    staged = tmp_path / "input" / "model.onnx"
    staged.parent.mkdir()
    staged.write_bytes(buf.getvalue())

    path, bundled = onnx_io.stage(staged)

    assert bundled
    np.testing.assert_allclose(_outputs(path), _outputs(tmp_path / "m.onnx"))


def test_an_opset_conversion_keeps_the_large_weights_out_of_the_converter(
    mlp_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnx's converter serializes the whole model (past 2 GiB it fails): the weights sit it out
    and come back in the result, which computes what the original does."""
    seen: list[int] = []
    convert = onnx_io.version_converter.convert_version

    def spying(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
        seen.append(sum(len(t.raw_data) for t in model.graph.initializer))
        return convert(model, opset)

    monkeypatch.setattr(onnx_io, "HELD_BYTES", 0)
    monkeypatch.setattr(onnx_io.version_converter, "convert_version", spying)
    model = onnx.load(str(mlp_onnx))
    weights = sum(len(t.raw_data) for t in model.graph.initializer)

    converted = onnx_io.convert_opset(model, 21)

    assert seen == [0] and weights > 0  # the converter saw no weight bytes
    assert sum(len(t.raw_data) for t in converted.graph.initializer) == weights
    assert converted.opset_import[0].version == 21
    x = {"input": np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)}
    run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, x)[0]
           for m in (str(mlp_onnx), converted.SerializeToString())]  # fmt: skip
    np.testing.assert_allclose(run[0], run[1], rtol=1e-6, atol=1e-6)


def test_a_failed_conversion_gives_the_weights_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
        raise RuntimeError("no adapter")

    monkeypatch.setattr(onnx_io, "HELD_BYTES", 0)
    monkeypatch.setattr(onnx_io.version_converter, "convert_version", failing)
    model = _model()
    before = [t.raw_data for t in model.graph.initializer]

    with pytest.raises(RuntimeError):
        onnx_io.convert_opset(model, 21)

    assert [t.raw_data for t in model.graph.initializer] == before
