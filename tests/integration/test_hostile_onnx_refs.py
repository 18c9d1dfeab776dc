"""ONNX models whose tensors point at files elsewhere, wherever ONNX lets a tensor sit:
initializers, Constant attributes, a subgraph's initializer, sparse initializers and a local
function's Constant. The torch-free pre-scan cannot read the protobuf, so these pass the upload
(201) and the sandboxed inspection of the real server's embedded worker rejects them with a clear
code: `external_data_not_supported` for a bare `.onnx`, `external_data_path` for a reference
that leaves the archive's folder. The file they point at is never read into the answer."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.integration
SECRET = "hostile-onnx-secret-7f3a"


def _external(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _io() -> tuple[Any, Any]:
    return (
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
    )


def _model(graph: Any, functions: list[Any] | None = None) -> bytes:
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions or [])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def hostile_models(location: str) -> dict[str, bytes]:
    """One model per place a tensor can sit, each pointing at `location`."""
    x, y = _io()
    add = helper.make_node("Add", ["x", "w"], ["y"])
    constant = helper.make_node("Constant", [], ["w"], value=_external("c", location))
    branch = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["w"])],
        "then",
        [],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],
        [_external("b", location)],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    sparse = helper.make_sparse_tensor(
        _external("values", location), numpy_helper.from_array(np.array([0])), [4]
    )
    sparse.values.name = "w"
    function = helper.make_function(
        "local",
        "F",
        ["x"],
        ["y"],
        [
            helper.make_node("Constant", [], ["k"], value=_external("f", location)),
            helper.make_node("Add", ["x", "k"], ["y"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    return {
        "initializer": _model(helper.make_graph([add], "g", [x], [y], [_external("w", location)])),
        "constant-attribute": _model(helper.make_graph([constant, add], "g", [x], [y])),
        "subgraph": _model(
            helper.make_graph(
                [
                    helper.make_node("If", ["cond"], ["w"], then_branch=branch, else_branch=branch),
                    add,
                ],
                "g",
                [x],
                [y],
                [cond],
            )
        ),
        "sparse-initializer": _model(
            helper.make_graph([add], "g", [x], [y], sparse_initializer=[sparse])
        ),
        "function": _model(
            helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local")], "g", [x], [y]),
            [function],
        ),
    }


def _zip(model: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m/model.onnx", model)
    return buf.getvalue()


def _inspect(server: Any, name: str, data: bytes) -> dict[str, Any]:
    response = server.post("/v1/models?wait=true", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_external_references_anywhere_are_rejected_at_inspection(
    server: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_text(SECRET * 4)
    cases = {
        **{
            f"bare-{k}": (f"{k}.onnx", v, "external_data_not_supported")
            for k, v in hostile_models(str(secret)).items()
        },
        **{
            f"archive-{k}": (f"{k}.zip", _zip(v), "external_data_path")
            for k, v in hostile_models("../../../" + str(secret).lstrip("/")).items()
        },
    }
    outcomes = {}
    for name, (filename, data, _code) in cases.items():
        body = _inspect(server, filename, data)
        outcomes[name] = (body["status"], (body.get("error") or {}).get("code"))
        assert SECRET not in str(body)

    assert outcomes == {name: ("rejected", code) for name, (_f, _d, code) in cases.items()}
