"""`prune` `method: channel` on `torch.nn.MultiheadAttention` heads (structure_mha.py).

The dynamo export packs q, k and v into one in_proj reshaped to (..., 3, E) and folds the heads
into the batch axis with a run-time `Mul(B, heads)`: removing heads must shrink the in_proj rows
and bias of q, k and v, the out_proj columns, and every `heads` and `E` constant of the reshape
targets, and the result must compute what the original computes with those heads zeroed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from networks import MhaLayer, MhaStack
from onnx import numpy_helper

from app.passes.prune_channel import PruneChannelConfig
from worker.channels.analysis import analyze
from worker.channels.graph import constants
from worker.channels.rewrite import rewrite
from worker.passes.base import PassResult
from worker.passes.prune_channel import PruneChannelPass
from worker.pipeline.tools import onnx_context


def export(module: torch.nn.Module, path: Path, dynamo: bool = True) -> Path:
    torch.manual_seed(0)
    example = (torch.randn(2, 5, 32),)
    if dynamo:
        dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("sequence", max=64)}
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            dynamo=True,
            dynamic_shapes={"x": dims},
            external_data=False,
        )
    else:
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("prune-mha")
    torch.manual_seed(0)
    layer, stack = MhaLayer(), MhaStack()
    return {
        "layer": export(layer, folder / "layer.onnx"),
        "stack": export(stack, folder / "stack.onnx"),
        "layer-torchscript": export(layer, folder / "layer-ts.onnx", dynamo=False),
    }


def prune(source: Path, work: Path, **fields: Any) -> PassResult:
    work.mkdir(parents=True, exist_ok=True)
    ctx = onnx_context(source, work)
    config = PruneChannelConfig(op="prune", method="channel", **fields)
    return PruneChannelPass().run(ctx, config)


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def weight_shapes(path: Path) -> list[tuple[int, ...]]:
    """Shapes of the MatMul/Gemm weights, in graph order."""
    model = onnx.load(str(path))
    values = constants(model)
    return [
        tuple(values[n.input[1]].shape)
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and n.input[1] in values
    ]


def heads_constants(model: Any) -> tuple[list[int], list[list[int]]]:
    """The constant factors of the integer Muls, and the constant pieces of every Concat that
    builds a shape (what encodes `heads` and `E`)."""
    if isinstance(model, Path):
        model = onnx.load(str(model))
    values = constants(model)
    factors, pieces = [], []
    for node in model.graph.node:
        known = [values[n] for n in node.input if n in values and values[n].dtype == np.int64]
        if node.op_type == "Mul":
            factors += [int(v) for v in known if v.size == 1]
        if node.op_type == "Concat":
            pieces += [[int(x) for x in v.reshape(-1)] for v in known]
    return factors, pieces


def run(path: Path, batch: int, length: int) -> np.ndarray:
    x = np.random.default_rng(batch * 100 + length).standard_normal((batch, length, 32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0]


def heads_groups(result: PassResult) -> list[tuple[int, int]]:
    groups = result.metrics["groups"]
    return [
        (g["channels_before"], g["channels_after"]) for g in groups if g["channels_per_unit"] == 24
    ]


# ---------------------------------------------------------------- tests


def test_encoder_layer_loses_half_of_its_heads(models: dict[str, Path], tmp_path: Path) -> None:
    source = models["layer"]

    result = prune(source, tmp_path, ratio=0.5, round_to=8)

    # one unit per head: its 8 channels of q, k and v (channels_per_unit 24); 4 -> 2 heads
    assert heads_groups(result) == [(4, 2)]
    # in_proj (32 -> 96, q|k|v rows) -> 48; out_proj reads 16 columns; FFN W1 64 -> 32
    assert weight_shapes(result.output_path) == [(32, 48), (32, 16), (32, 32), (32, 32)]
    bias = [v for k, v in initializers(result.output_path).items() if "in_proj_bias" in k]
    assert [b.shape for b in bias] == [(48,)]
    assert result.metrics["max_abs_error_vs_masked_reference"] < 1e-4
    factors, pieces = heads_constants(result.output_path)
    assert 4 not in factors and 2 in factors  # Mul(B, heads)
    assert [4] not in pieces and [2] in pieces  # view(B, heads, L, width)
    assert [16] in pieces  # view(L, B, 3, E)


def test_pruned_heads_are_the_masked_ones(models: dict[str, Path], tmp_path: Path) -> None:
    """The kept q/k/v rows of in_proj are those of whole heads, in the packed 3E layout."""
    source = models["layer"]
    before = initializers(source)

    result = prune(source, tmp_path, ratio=0.5, round_to=8)

    bias_name = next(k for k in before if "in_proj_bias" in k)
    old = before[bias_name].reshape(3, 4, 8)
    new = initializers(result.output_path)[bias_name].reshape(3, 2, 8)
    kept = [h for h in range(4) if any(np.array_equal(old[0, h], q) for q in new[0])]
    assert len(kept) == 2
    np.testing.assert_array_equal(new, old[:, kept])


@pytest.mark.parametrize("batch, length", [(1, 1), (3, 7), (6, 2)])
def test_pruned_layer_runs_at_other_sizes(
    models: dict[str, Path], tmp_path: Path, batch: int, length: int
) -> None:
    result = prune(models["layer"], tmp_path, ratio=0.5, round_to=8)

    assert run(result.output_path, batch, length).shape == (batch, length, 32)


def test_two_layer_encoder_loses_half_of_the_heads_of_each_layer(
    models: dict[str, Path], tmp_path: Path
) -> None:
    source = models["stack"]

    result = prune(source, tmp_path, ratio=0.5, round_to=8)

    assert heads_groups(result) == [(4, 2), (4, 2)]
    got = weight_shapes(result.output_path)
    assert got.count((32, 48)) == 2 and got.count((32, 16)) == 2
    assert (32, 96) not in got
    factors, pieces = heads_constants(result.output_path)
    assert 4 not in factors and [4] not in pieces
    assert result.metrics["max_abs_error_vs_masked_reference"] < 1e-4
    for batch, length in [(1, 3), (4, 9)]:
        assert run(result.output_path, batch, length).shape == (batch, length, 32)


def test_layers_may_keep_different_head_counts(models: dict[str, Path], tmp_path: Path) -> None:
    """Layers that share the shape constants (`Mul(B, heads)`, the targets) each get a copy."""
    source = models["stack"]
    analysis = analyze(onnx.load(str(source)))
    heads = [g for g in analysis.groups if g.width == 24]
    assert len(heads) == 2 and all(g.prunable for g in heads)

    removed = {int(heads[0].units[0])} | {int(u) for u in heads[1].units[:3]}
    pruned, masked = rewrite(analysis, removed, "prune"), rewrite(analysis, removed, "mask")
    onnx.checker.check_model(pruned, full_check=True)
    onnx.shape_inference.infer_shapes(pruned, check_type=True, strict_mode=True)
    factors, _ = heads_constants(pruned)
    assert sorted(factors) == [1, 3]
    x = np.random.default_rng(0).standard_normal((3, 6, 32)).astype(np.float32)
    want, got = (
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]
        for m in (masked, pruned)
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_torchscript_export_stays_refused(models: dict[str, Path], tmp_path: Path) -> None:
    """The TorchScript exporter computes the head width at run time: heads are left whole."""
    result = prune(models["layer-torchscript"], tmp_path, ratio=0.5, round_to=8)

    assert heads_groups(result) == []
    assert any(s["channels"] == 96 for s in result.metrics["skipped_groups"])
    assert (32, 96) in weight_shapes(result.output_path)


def test_ignoring_out_proj_keeps_every_head(models: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(models["layer"]))
    (out_proj,) = [n.name for n in model.graph.node if n.op_type == "Gemm"]

    result = prune(models["layer"], tmp_path, ratio=0.5, round_to=8, ignore_nodes=[out_proj])

    assert heads_groups(result) == []
    assert weight_shapes(result.output_path)[:2] == [(32, 96), (32, 32)]


def test_a_chain_tensor_read_elsewhere_is_refused(models: dict[str, Path]) -> None:
    """q after its Gather also leaves the graph: the chain is not followed, nothing is pruned."""
    model = onnx.load(str(models["layer"]))
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and "select" in n.output[0]]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(gathers[0].output[0]))

    analysis = analyze(model)

    values = constants(model)
    (in_proj,) = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in values and values[n.input[1]].shape == (32, 96)
    ]
    (group,) = [g for g in analysis.groups if in_proj in g.producers]
    assert not group.prunable and "Gather" in str(group.reason)
