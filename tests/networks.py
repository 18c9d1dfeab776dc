"""The tiny torch networks the tests build, and the helpers that build or train them.

Importable (pytest puts tests/ on the path) by worker-side tests only: it imports torch, so
tests/conftest.py imports it inside its fixtures. Each builder consumes the random generator
exactly as the test that used to define it did: call `torch.manual_seed` first, as they do.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def export_onnx(
    module: torch.nn.Module, example: torch.Tensor, path: Path, exporter: str = "dynamo"
) -> Path:
    """Export to ONNX with a dynamic batch axis (and sequence axis for token ids); the input is the
    forward argument, `x` for floats, `input_ids` for token ids. `exporter`: `dynamo`,
    `dynamo-unoptimized` (without onnxscript's graph optimization) or `torchscript`."""
    floats = example.dtype.is_floating_point
    name = "x" if floats else "input_ids"
    dims = {0: "batch"} if floats else {0: "batch", 1: "sequence"}
    if exporter == "torchscript":
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=[name],
            dynamic_axes={name: dims},
        )
        return path
    shapes = {name: {axis: torch.export.Dim(label, max=4096) for axis, label in dims.items()}}
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=True,
        dynamic_shapes=shapes,
        external_data=False,
        optimize=exporter == "dynamo",
    )
    return path


# ---------------------------------------------------------------- multilayer perceptrons


class Mlp(torch.nn.Module):
    """Linear layers of these widths with a ReLU between each two (`Mlp(32, 64, 10)`)."""

    def __init__(self, *widths: int) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for index, (inputs, outputs) in enumerate(itertools.pairwise(widths)):
            if index:
                layers.append(torch.nn.ReLU())
            layers.append(torch.nn.Linear(inputs, outputs))
        self.layers = torch.nn.Sequential(*layers)

    def linear(self, index: int) -> torch.nn.Linear:
        """The `index`-th linear layer (0 is the first)."""
        layer = self.layers[2 * index]
        assert isinstance(layer, torch.nn.Linear)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def kill_neurons(layer: torch.nn.Linear, units: Sequence[int]) -> None:
    """Make these output units of `layer` dead behind a ReLU: weights 0, bias -1 on any input."""
    assert layer.bias is not None
    with torch.no_grad():
        layer.weight[list(units)] = 0.0
        layer.bias[list(units)] = -1.0


# ---------------------------------------------------------------- convolutional networks


class Cnn(torch.nn.Module):
    """A small CNN with batch-norm and a residual block, 3x16x16 inputs, 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.block = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(y + self.block(y))
        return self.head(y.mean((2, 3)))


class BranchCnn(torch.nn.Module):
    """Conv + batch-norm, a residual block, concatenated branches, depthwise, flatten + linear.

    `branch` is the width of the second concatenated branch (the depthwise conv has 8 + branch
    channels), `hidden` the width of the flattened linear layer, `block_norm` puts a batch-norm
    after the residual block's convolution; 3x8x8 inputs, 5 classes.
    """

    def __init__(self, branch: int = 24, hidden: int = 40, block_norm: bool = False) -> None:
        super().__init__()
        joined = 8 + branch
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.block = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(16) if block_norm else torch.nn.Identity()
        self.a = torch.nn.Conv2d(16, 8, 1)
        self.b = torch.nn.Conv2d(16, branch, 3, padding=1)
        self.dw = torch.nn.Conv2d(joined, joined, 3, padding=1, groups=joined)
        self.pw = torch.nn.Conv2d(joined, 16, 1)
        self.fc = torch.nn.Linear(16 * 4 * 4, hidden)
        self.out = torch.nn.Linear(hidden, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(y + self.bn2(self.block(y)))
        y = torch.cat([self.a(y), self.b(y)], 1)
        y = torch.relu(self.pw(torch.relu(self.dw(y))))
        y = torch.flatten(torch.nn.functional.max_pool2d(y, 2), 1)
        return self.out(torch.relu(self.fc(y)))


def dead_channel_cnn() -> BranchCnn:
    """A `BranchCnn` whose every unit lives but 4 `b` channels and 4 `fc` neurons (8 dead).

    Weights made non-negative and biases positive on the relu-fed layers keep every unit active;
    `fc` units 3, 4, 20, 33 output relu(-1) = 0, and `b` channels 0, 7, 8, 23 are zero into the
    depthwise convolution, whose bias -1 then dies behind its relu.
    """
    cnn = BranchCnn().eval()
    dead_fc, dead_b = [3, 4, 20, 33], [0, 7, 8, 23]
    with torch.no_grad():
        for layer in (cnn.block, cnn.a, cnn.b, cnn.dw, cnn.pw, cnn.fc):
            assert layer.bias is not None
            layer.weight.abs_()  # on a relu's non-negative outputs: every unit lives
            layer.bias.copy_(layer.bias.abs() + 0.1)
        kill_neurons(cnn.fc, dead_fc)
        cnn.b.weight[dead_b] = 0.0  # b feeds the depthwise conv, then a relu
        assert cnn.b.bias is not None and cnn.dw.bias is not None
        cnn.b.bias[dead_b] = 0.0
        cnn.dw.bias[8 + np.array(dead_b)] = -1.0
    return cnn


class SeedCnn(torch.nn.Module):
    """The classic: conv 3->64, conv 64->128 (relu, 2x2 max-pool), fc 4608->1000, fc 1000->10."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.c2 = torch.nn.Conv2d(64, 128, 3, padding=1)
        self.f1 = torch.nn.Linear(128 * 6 * 6, 1000)
        self.f2 = torch.nn.Linear(1000, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.f2(torch.relu(self.f1(torch.flatten(x, 1))))


class ClassicCnn(torch.nn.Module):
    """Pools, grouped/strided/dilated convolutions and the usual activations, 3x32x32 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, groups=2),
            torch.nn.Hardswish(),
            torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
            torch.nn.SiLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 12),
            torch.nn.GELU(),
            torch.nn.Linear(12, 10),
            torch.nn.LogSoftmax(-1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def conv_bn_net() -> torch.nn.Sequential:
    """Conv 3->4, batch-norm with non-trivial running statistics, relu, flatten, linear; 3x8x8."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
    )
    norm = model[1]
    assert isinstance(norm, torch.nn.BatchNorm2d)
    assert norm.running_mean is not None and norm.running_var is not None
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    return model


def running_statistics(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics on every BatchNorm2d (means in +-0.5, variances 0.5..2)."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.BatchNorm2d):
            assert sub.running_mean is not None and sub.running_var is not None
            sub.running_mean.uniform_(-0.5, 0.5)
            sub.running_var.uniform_(0.5, 2.0)
    return module


def randomize_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """Seeded random running statistics and affine parameters on every batch-norm, in eval mode
    (so that batch-norm slicing mistakes show)."""
    torch.manual_seed(1)
    for sub in module.modules():
        if isinstance(sub, torch.nn.BatchNorm2d):
            assert sub.running_mean is not None and sub.running_var is not None
            sub.running_mean.uniform_(-0.5, 0.5)
            sub.running_var.uniform_(0.5, 2.0)
            sub.weight.data.uniform_(0.5, 1.5)
            sub.bias.data.uniform_(-0.2, 0.2)
    return module.eval()


class UpsamplingCnn(torch.nn.Module):
    """Conv down, bilinear Resize up, ConvTranspose up: an output map twice the input's size."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.down(x))
        y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear")
        return self.head(torch.relu(self.up(y)))


# ---------------------------------------------------------------- digits classifiers (1x8x8)


class DigitsCnn(torch.nn.Module):
    """Conv 1->32, conv 32->64 (2x2 max-pool), then fc 1024->`hidden`->10 (or 1024->10 if None)."""

    def __init__(self, hidden: int | None = 128) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = torch.nn.Linear(64 * 4 * 4, hidden) if hidden else None
        self.fc2 = torch.nn.Linear(hidden or 64 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.max_pool2d(torch.relu(self.conv2(y)), 2).flatten(1)
        if self.fc1 is not None:
            y = torch.relu(self.fc1(y))
        return self.fc2(y)


class NormedDigitsCnn(torch.nn.Module):
    """Three convolutions (two behind batch-norm), global average pooling, fc 64->10."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.c2, self.b2 = torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32)
        self.c3 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.nn.functional.max_pool2d(torch.relu(self.b2(self.c2(x))), 2)
        return self.fc(torch.relu(self.c3(x)).mean((2, 3)))


class TinyCnn(torch.nn.Module):
    """A digits student about 100x smaller than `DigitsCnn`, of another architecture."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


class FeatureMap(torch.nn.Module):
    """A network whose output is a feature map (tanh of a 1->4 conv), not logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


def damaged_copy(model: DigitsCnn, fraction: float) -> DigitsCnn:
    """A copy of `model` with the weakest (L1) `fraction` of conv channels and hidden neurons
    zeroed, as magnitude channel pruning without recovery leaves it."""
    copy = DigitsCnn(model.fc1.out_features if model.fc1 is not None else None)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in (copy.conv1, copy.conv2, copy.fc1):
            if layer is None:
                continue
            assert layer.bias is not None
            norms = layer.weight.reshape(layer.weight.shape[0], -1).abs().sum(1)
            weakest = norms.argsort()[: int(fraction * len(norms))]
            layer.weight[weakest] = 0.0
            layer.bias[weakest] = 0.0
    return copy


def export_digits(module: torch.nn.Module, path: Path) -> Path:
    """Export a 1x8x8-image network to ONNX (input `image`, output `logits`, dynamic batch)."""
    torch.onnx.export(
        module.eval(),
        (torch.randn(2, 1, 8, 8),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", max=4096)}},
        external_data=False,
    )
    return path


def train_classifier(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    threads: int | None = None,
) -> torch.nn.Module:
    """Train with Adam on cross-entropy, shuffling every epoch (from the global generator unless
    one is given), optionally on `threads` torch threads; returned in eval mode."""
    previous = torch.get_num_threads()
    if threads:
        # OpenMP threads busy-spin and crawl when other processes share the cores.
        torch.set_num_threads(threads)
    try:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(epochs):
            for batch in torch.randperm(len(inputs), generator=generator).split(batch_size):
                loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(previous)
    return model.eval()


# ---------------------------------------------------------------- transformers over token ids


class Encoder(torch.nn.Module):
    """A 2-layer transformer encoder over token ids, mean-pooled into `classes` logits."""

    def __init__(self, vocab: int = 100, dim: int = 32, ffn: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        layer = torch.nn.TransformerEncoderLayer(dim, 4, ffn, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(input_ids)).mean(1))


class Attention(torch.nn.Module):
    """Multi-head self-attention with a separate heads axis, as BERT/GPT code writes it."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.width = heads, dim // heads
        self.q, self.k = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim)
        self.v, self.o = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (
            f(x).view(b, n, self.heads, self.width).transpose(1, 2)
            for f in (self.q, self.k, self.v)
        )
        scores = torch.softmax(q @ k.transpose(-1, -2) / self.width**0.5, -1)
        return self.o((scores @ v).transpose(1, 2).reshape(b, n, self.heads * self.width))


class Bert(torch.nn.Module):
    """Two attention layers on a residual stream, one behind a layer norm."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, 32)
        self.one, self.two = Attention(), Attention()
        self.norm = torch.nn.LayerNorm(32)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        x = self.norm(x + self.one(x))
        return self.head((x + self.two(x)).mean(1))


class EagerBertBlock(torch.nn.Module):
    """Eager (non-SDPA) attention, exported with the TorchScript exporter: the pattern ONNX
    Runtime's transformer optimizer fuses (docs/field-notes.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.ln = torch.nn.Embedding(1000, 64), torch.nn.LayerNorm(64)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(64, 64) for _ in range(4))
        self.ln2, self.ln3 = torch.nn.LayerNorm(64), torch.nn.LayerNorm(64)
        self.f1, self.f2 = torch.nn.Linear(64, 256), torch.nn.Linear(256, 64)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.emb(input_ids))
        b, n, _ = h.shape
        q, k, v = (p(h).view(b, n, 4, 16).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v
        h = self.ln2(h + self.o(a.transpose(1, 2).reshape(b, n, 64)))
        return self.ln3(h + self.f2(torch.nn.functional.gelu(self.f1(h))))


class CausalLm(torch.nn.Module):
    """A GPT-style block: positions from arange, a triu causal mask, masked_fill, tanh GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = torch.nn.Embedding(50, 32), torch.nn.Embedding(64, 32)
        self.ln, self.qkv, self.proj = (
            torch.nn.LayerNorm(32),
            torch.nn.Linear(32, 96),
            torch.nn.Linear(32, 32),
        )
        self.ff = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(64, 32)
        )
        self.head = torch.nn.Linear(32, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        q, k, v = (h.view(b, t, 4, 8).transpose(1, 2) for h in self.qkv(self.ln(x)).split(32, -1))
        att = (q @ k.transpose(-2, -1)) / 8**0.5
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        y = att.masked_fill(mask, float("-inf")).softmax(-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, 32))
        return self.head(x + self.ff(x))


class MhaLayer(torch.nn.Module):
    """One `torch.nn.TransformerEncoderLayer` (32 wide, 4 heads) with a random in_proj bias."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        torch.nn.init.normal_(self.layer.self_attn.in_proj_bias)  # zeros by default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class MhaStack(torch.nn.Module):
    """Two such layers in a `TransformerEncoder`, every parameter redrawn so that they differ."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        for parameter in self.encoder.parameters():  # the layers are deep copies: make them differ
            torch.nn.init.normal_(parameter, std=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class Glu(torch.nn.Module):
    """A gated linear unit: the up projection's two halves are value and gate, then down."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(16, 64), torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.up(x).chunk(2, -1)
        return self.down(value * torch.sigmoid(gate))


def tiny_linear() -> torch.nn.Sequential:
    """Linear(4, 3) + ReLU in eval mode: the smallest module the archive-format tests save."""
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()


class TinyLinear(torch.nn.Module):
    """One Linear(4, 2), as a named module class (the hostile-program tests pickle around it)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


# ---------------------------------------------------------------- ONNX graphs built by hand


def _onnx_model(nodes: list, inputs: list, outputs: list, inits: list, opset: int, ir: int) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def onnx_conv_net(path: Path, opset: int) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm over 3x16x16, written at `opset`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shapes = {"w": (8, 3, 3, 3), "b": (8,), "fc_w": (4, 8), "fc_b": (4,)}
    inits = [
        numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in shapes.items()
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    model = _onnx_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
        opset,
        7,
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_decoder(path: Path, vocab: int = 512, dim: int = 128, ffn: int = 256) -> Path:
    """ids -> Gather(embedding) -> MatMul, Relu, MatMul (+ residual) -> MatMul(lm head): the
    weights a decoder-only LLM's bytes are in, with token logits out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shapes = {"emb": (vocab, dim), "w_up": (dim, ffn), "w_down": (ffn, dim), "head": (dim, vocab)}
    inits = [
        numpy_helper.from_array((rng.normal(size=s) * 0.1).astype(np.float32), n)
        for n, s in shapes.items()
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "w_up"], ["h"], name="up"),
        helper.make_node("Relu", ["h"], ["a"], name="act"),
        helper.make_node("MatMul", ["a", "w_down"], ["d"], name="down"),
        helper.make_node("Add", ["e", "d"], ["r"], name="residual"),
        helper.make_node("MatMul", ["r", "head"], ["logits"], name="lm_head"),
    ]
    model = _onnx_model(
        nodes,
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])],
        inits,
        17,
        8,
    )
    onnx.save(model, str(path))
    return path


def onnx_fragile_mlp(path: Path) -> Path:
    """x -> up (one output column x1000) -> Relu -> down (that row ~0) -> Relu -> head: `down`
    reads an activation outlier that adds nothing in float but sets its int8 activation scale,
    as the FFN down-projections of transformers read post-GELU outliers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    up = rng.normal(size=(32, 64)).astype(np.float32) * 0.2
    up[:, 5] *= 1000.0
    down = rng.normal(size=(64, 64)).astype(np.float32) * 0.2
    down[5, :] = 1e-6
    head = rng.normal(size=(64, 10)).astype(np.float32) * 0.2
    weights = (("w_up", up), ("w_down", down), ("w_head", head))
    inits = [numpy_helper.from_array(a, n) for n, a in weights]
    nodes = [
        helper.make_node("MatMul", ["x", "w_up"], ["u"], name="up"),
        helper.make_node("Relu", ["u"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w_down"], ["d"], name="down"),
        helper.make_node("Relu", ["d"], ["e"], name="relu2"),
        helper.make_node("MatMul", ["e", "w_head"], ["y"], name="head"),
    ]
    model = _onnx_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        inits,
        17,
        8,
    )
    onnx.save(model, str(path))
    return path
