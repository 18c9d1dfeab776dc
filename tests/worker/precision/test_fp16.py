"""fp16 conversion of graphs where the exporter writes float by attribute (issue #9).

The real all-MiniLM-L6-v2 export (mean pooling inside the graph) failed to load after fp16
conversion: `attention_mask.unsqueeze(-1).to(hidden.dtype)` exports as a Cast to float, and the
converter declared its output fp16 without changing the Cast. The tiny network here has the same
pattern (token embedding, a linear layer, masked mean pooling), exported by both exporters.

Tolerance: per-sample cosine of the fp16 model's embeddings to fp32's at least `MIN_COSINE`
(measured: 0.99999998 here, 0.999998 on the real MiniLM over 106 sentences).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from app.passes.convert import ConvertConfig
from worker.passes.convert import ConvertPass
from worker.pipeline.tools import onnx_context
from worker.precision.fp16 import FLOAT, FLOAT16, TYPE_ATTRIBUTES, to_fp16

MIN_COSINE = 0.999
VOCAB, WIDTH = 50, 16
INPUTS = ("input_ids", "attention_mask")


class MaskedMeanPool(torch.nn.Module):
    """Embedding, Linear, then sentence-transformers' masked mean pooling (a Cast to float)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.fc = torch.nn.Linear(WIDTH, WIDTH)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.fc(self.embed(input_ids))
        weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)


def _export(path: Path, exporter: str) -> Path:
    """MaskedMeanPool as ONNX with dynamic batch and sequence, by the named exporter."""
    torch.manual_seed(0)
    module = MaskedMeanPool().eval()
    ids = torch.randint(0, VOCAB, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.int64)
    if exporter == "torchscript":
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
        torch.onnx.export(
            module, (ids, mask), str(path), dynamo=False, input_names=list(INPUTS),
            output_names=["embedding"], dynamic_axes=axes,
        )  # fmt: skip
        return path
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("sequence", max=512)
    shapes = {name: {0: batch, 1: seq} for name in INPUTS}
    torch.onnx.export(
        module, (ids, mask), str(path), dynamo=True, dynamic_shapes=shapes, external_data=False
    )
    return path


def _padded_feeds() -> dict[str, np.ndarray]:
    """Sentences of different lengths, right-padded: the mask decides what is averaged."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, VOCAB, (8, 12), dtype=np.int64)
    lengths = rng.integers(1, 13, 8)
    mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def _embed(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0], dtype=np.float64)


def _contradictions(model: onnx.ModelProto) -> list[str]:
    """Nodes whose type attribute says float while their output is declared fp16."""
    graph = model.graph
    declared = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    found = []
    for node in graph.node:
        key = TYPE_ATTRIBUTES.get(node.op_type)
        for attr in node.attribute:
            if attr.name == key and attr.i == FLOAT and declared.get(node.output[0]) == FLOAT16:
                found.append(node.name)
    return found


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_mask_cast_to_float_converts_and_stays_faithful(tmp_path: Path, exporter: str) -> None:
    source = _export(tmp_path / "pool.onnx", exporter)
    work = tmp_path / "work"
    work.mkdir()
    config = ConvertConfig(op="convert", precision="fp16")

    result = ConvertPass().run(onnx_context(source, work, threads=1), config)

    converted = onnx.load(str(result.output_path))
    assert _contradictions(converted) == []
    casts = [n for n in converted.graph.node if n.op_type == "Cast"]
    assert any(a.name == "to" and a.i == FLOAT16 for n in casts for a in n.attribute)
    inits = {i.data_type for i in converted.graph.initializer if len(i.dims) == 2}
    assert inits == {FLOAT16}  # the weights really are fp16
    feeds = _padded_feeds()
    ref, got = _embed(source, feeds), _embed(result.output_path, feeds)
    cosine = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.min() >= MIN_COSINE


def test_a_cast_kept_in_fp32_keeps_writing_float(tmp_path: Path) -> None:
    source = onnx.load(str(_export(tmp_path / "pool.onnx", "torchscript")))
    cast = next(n for n in source.graph.node if n.op_type == "Cast" and _to(n) == FLOAT)
    config = ConvertConfig(op="convert", precision="fp16", node_block_list=[cast.name])

    converted = to_fp16(source, config, {}, set())

    kept = next(n for n in converted.graph.node if n.name == cast.name)
    assert _to(kept) == FLOAT
    assert _contradictions(converted) == []
    got = _embed_proto(converted, _padded_feeds())
    assert np.isfinite(got).all()


def _to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def _embed_proto(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])
