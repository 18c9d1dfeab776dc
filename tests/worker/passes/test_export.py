"""`export` on tiny real networks: each supported conversion is run by the pass, validated by it
at two batch sizes, and the written file is loaded by the test in its own runtime and compared
with the original."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from app.passes.export import ExportConfig
from worker.passes.base import PassResult
from worker.passes.export import ExportPass
from worker.pipeline.tools import WorkerTools, onnx_context

SPECS = [{"name": "x", "dtype": "float32", "shape": ["batch", 32]}]


def _export(source: Path, fmt: str, work: Path, **fields: Any) -> PassResult:
    work.mkdir(parents=True)
    if fmt == "onnx":
        ctx = onnx_context(source, work)
    else:  # a program's signature, as the worker's inspection records it
        ctx = WorkerTools(SPECS, {}, None, threads=2).context(source, fmt, work)
    return ExportPass().run(ctx, ExportConfig(op="export", **fields))


@pytest.fixture(scope="module")
def pt2(tmp_path_factory: pytest.TempPathFactory, mlp_module: torch.nn.Module) -> Path:
    path = tmp_path_factory.mktemp("export") / "mlp.pt2"
    batch = torch.export.Dim("batch", max=4096)
    program = torch.export.export(
        mlp_module, (torch.randn(2, 32),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(program, str(path))
    return path


def _reference(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


X = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)


def test_pt2_to_onnx_keeps_the_dynamic_batch(
    pt2: Path, mlp_module: torch.nn.Module, tmp_path: Path
) -> None:
    result = _export(pt2, "pt2", tmp_path / "w", format="onnx", opset=18)

    assert result.output_format == "onnx"
    assert result.metrics["validation"]["batch_sizes"] == [1, 3]
    np.testing.assert_allclose(
        _onnx_outputs(result.output_path, X), _reference(mlp_module, X), atol=1e-5
    )


def test_pt2_to_torchscript_matches_the_program(
    pt2: Path, mlp_module: torch.nn.Module, tmp_path: Path
) -> None:
    result = _export(pt2, "pt2", tmp_path / "w", format="torchscript")

    loaded = torch.jit.load(str(result.output_path))
    with torch.no_grad():
        got = loaded(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got, _reference(mlp_module, X), atol=1e-5)
    assert result.metrics["exporter"] == "torch.jit.trace"


def test_onnx_to_torchscript_goes_through_our_conversion(
    mlp_onnx: Path, mlp_module: torch.nn.Module, tmp_path: Path
) -> None:
    result = _export(mlp_onnx, "onnx", tmp_path / "w", format="torchscript")

    loaded = torch.jit.load(str(result.output_path))
    with torch.no_grad():
        got = loaded(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got, _reference(mlp_module, X), atol=1e-5)
    assert result.metrics["exporter"] == "OnnxModule + torch.jit.trace"
    assert any("ONNX-to-PyTorch" in w for w in result.warnings)


def test_onnx_to_onnx_changes_the_opset(mlp_onnx: Path, tmp_path: Path) -> None:
    result = _export(mlp_onnx, "onnx", tmp_path / "w", format="onnx", opset=17)

    model = onnx.load(str(result.output_path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert (opset, result.metrics["opset"]) == (17, 17)
    assert result.metrics["opset_before"] != 17
    np.testing.assert_allclose(
        _onnx_outputs(result.output_path, X), _onnx_outputs(mlp_onnx, X), atol=1e-6
    )


def test_a_drifting_export_fails_export_mismatch(
    mlp_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter that changes the numbers (simulated: the weights perturbed after writing)
    is caught by the pass's own validation, never handed on."""
    from worker.passes import export as export_pass

    original = export_pass._onnx_opset

    def drifting(ctx: Any, out: Path, opset: int) -> dict[str, Any]:
        metrics = original(ctx, out, opset)
        model = onnx.load(str(out))
        init = model.graph.initializer[0]
        values = onnx.numpy_helper.to_array(init) + 0.5
        init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), init.name))
        onnx.save(model, str(out))
        return metrics

    monkeypatch.setattr(export_pass, "_onnx_opset", drifting)

    with pytest.raises(Exception) as failed:
        _export(mlp_onnx, "onnx", tmp_path / "w", format="onnx", opset=17)

    assert getattr(failed.value, "code", None) == "export_mismatch"
