"""A tiny mobile detector written the way paddle2onnx writes the PP-OCR models: opset 12, dynamic
batch, height and width, and every weight in a `Constant` node (no initializer at all).

The real PP-OCRv4 detector (rapidocr_onnxruntime) showed that graphs of this form defeated
distillation (the Constant weights were frozen buffers) and parameter counting (0 parameters);
this network has its patterns: conv + batch-norm + hard-swish, a depthwise conv, a
squeeze-excitation block with HardSigmoid, a nearest `Resize` upsampling added to a higher
resolution branch, a `ConvTranspose` and a one-channel output map.

Importable by worker-side tests only (it imports torch), like tests/networks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import helper

OPSET = 12


class MobileDetector(torch.nn.Module):
    """Stem (stride 2), depthwise + SE, pointwise, down (stride 2), lateral, Resize x2 + add,
    ConvTranspose x2 back to the input size, 1x1 head: an (N, 1, H, W) map of logits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.stem_bn = torch.nn.BatchNorm2d(16)
        self.dw = torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False)
        self.dw_bn = torch.nn.BatchNorm2d(16)
        self.se_reduce = torch.nn.Conv2d(16, 8, 1)
        self.se_expand = torch.nn.Conv2d(8, 16, 1)
        self.pw = torch.nn.Conv2d(16, 24, 1)
        self.down = torch.nn.Conv2d(24, 32, 3, 2, 1)
        self.lateral = torch.nn.Conv2d(32, 24, 1)
        self.fuse = torch.nn.Conv2d(24, 16, 3, 1, 1)
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, 2)
        self.head = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardswish(self.stem_bn(self.stem(x)))
        y = F.hardswish(self.dw_bn(self.dw(y)))
        gate = F.adaptive_avg_pool2d(y, 1)
        y = y * F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(gate))))
        high = F.relu(self.pw(y))
        low = self.lateral(F.relu(self.down(high)))
        y = high + F.interpolate(low, scale_factor=2.0, mode="nearest")
        return self.head(self.up(F.relu(self.fuse(y))))


def _randomized(module: MobileDetector) -> MobileDetector:
    """Non-trivial batch-norm statistics, so that folding or ignoring them would show, and no
    constant offset in the map (a random network's map is its bias: any copy would have a
    cosine of ~1 to it)."""
    generator = torch.Generator().manual_seed(0)
    torch.nn.init.zeros_(module.head.bias)
    torch.nn.init.zeros_(module.up.bias)
    for bn in (module.stem_bn, module.dw_bn):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator) * 0.1)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
    return module.eval()


def constants_only(model: Any) -> Any:
    """The same model with every initializer moved into a `Constant` node at the graph's start
    (as paddle2onnx writes weights); graph inputs that named initializers are dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = {init.name for init in graph.initializer}
    constants = [
        helper.make_node("Constant", [], [init.name], name=f"const_{i}", value=init)
        for i, init in enumerate(graph.initializer)
    ]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [v for v in graph.input if v.name not in names]
    del graph.input[:]
    graph.input.extend(kept)
    del graph.initializer[:]
    onnx.checker.check_model(out)
    return out


def export_detector(path: Path, seed: int = 0) -> tuple[Path, MobileDetector]:
    """A seeded `MobileDetector` exported paddle-style to `path` (and the torch module)."""
    torch.manual_seed(seed)
    module = _randomized(MobileDetector())
    plain = path.with_suffix(".initializers.onnx")
    torch.onnx.export(
        module,
        (torch.randn(1, 3, 32, 32),),
        str(plain),
        dynamo=False,
        opset_version=OPSET,
        input_names=["x"],
        output_names=["map"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "map": {0: "n", 2: "h", 3: "w"}},
    )
    onnx.save(constants_only(onnx.load(str(plain))), str(path))
    return path, module
