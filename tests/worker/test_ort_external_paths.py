"""ONNX Runtime itself refuses external data outside the model's folder (the floor in
pyproject.toml's `worker` extra is the version verified here). ModelPress checks every external
reference first (worker/onnx_io.py); this is the defence in depth behind that check."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

INSIDE, OUTSIDE = 1.0, 7.0


def _model_with_external(path: Path, location: str) -> Path:
    """`y = x + w`, `w` (4 floats) read from `location` relative to the model's folder."""
    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """`tmp/model/` holding `inside.bin`; `tmp/outside.bin` (other values) beside the folder."""
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    np.full(4, INSIDE, np.float32).tofile(folder / "inside.bin")
    np.full(4, OUTSIDE, np.float32).tofile(tmp_path / "outside.bin")
    os.symlink(tmp_path / "outside.bin", folder / "link.bin")
    return folder


def _run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.zeros(4, np.float32)})[0]


def test_external_data_inside_the_model_folder_loads(model_dir: Path) -> None:
    """The control: the same model with a reference inside its folder loads and runs."""
    out = _run(_model_with_external(model_dir / "m.onnx", "inside.bin"))

    assert out.tolist() == [INSIDE] * 4


@pytest.mark.parametrize(
    "location",
    ["../outside.bin", "sub/../../outside.bin", "{abs}", "link.bin"],
    ids=["parent", "nested-parent", "absolute", "symlink-out"],
)
def test_external_data_outside_the_model_folder_is_refused(model_dir: Path, location: str) -> None:
    outside = str(model_dir.parent / "outside.bin")
    path = _model_with_external(model_dir / "m.onnx", location.format(abs=outside))

    with pytest.raises(Exception, match=r"(?i)external data path") as info:
        _run(path)

    assert "escapes model directory" in str(info.value) or "Absolute path" in str(info.value)
