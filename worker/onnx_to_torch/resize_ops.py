"""`Resize` of our ONNX -> PyTorch conversion (registered into `OPS` on import; module.py imports
this module): `nearest` and `linear` in every coordinate transformation and nearest mode that
exports use, from `scales` or `sizes`, computed as ONNX Runtime does (source coordinates per axis,
clamped; linear is separable), so that it matches ONNX Runtime at any input size rather than
only where torch's `interpolate` agrees with it."""

from __future__ import annotations

import math
from typing import Any

import torch

from worker.onnx_to_torch.ops import Node, _ints, op

COORDINATE_MODES = (
    "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
)  # fmt: skip
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _check_resize(node: Node) -> str | None:
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode {mode}"
    coordinates = node.attr("coordinate_transformation_mode", "half_pixel")
    if coordinates not in COORDINATE_MODES:
        return f"Resize coordinate_transformation_mode {coordinates}"
    if node.attr("nearest_mode", "round_prefer_floor") not in NEAREST_MODES:
        return f"Resize nearest_mode {node.attr('nearest_mode')}"
    if node.attr("antialias", 0) or node.attr("axes") is not None:
        return "Resize with antialias or axes"
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        return "Resize keep_aspect_ratio_policy other than stretch"
    return None


def _sizes_and_scales(x: list[Any]) -> tuple[list[int], list[float]]:
    """Output size and scale per axis, from `sizes` (4th input) or `scales` (3rd, or 2nd at
    opset 10, whose Resize takes no roi)."""
    shape = list(x[0].shape)
    sizes = x[3] if len(x) > 3 and x[3] is not None and x[3].numel() else None
    if sizes is not None:
        out = _ints(sizes)
        return out, [o / i for o, i in zip(out, shape, strict=True)]
    scales_in = x[2] if len(x) > 2 else x[1]
    scales = [float(s) for s in scales_in.reshape(-1).tolist()]
    return [math.floor(i * s) for i, s in zip(shape, scales, strict=True)], scales


def _source(node: Node, out: int, size: int, scale: float, device: Any) -> torch.Tensor:
    """Each output position's coordinate in the input along one axis (float64)."""
    x = torch.arange(out, dtype=torch.float64, device=device)
    mode = node.attr("coordinate_transformation_mode", "half_pixel")
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "align_corners":
        return x * ((size - 1) / (out - 1)) if out > 1 else torch.zeros_like(x)
    if mode == "pytorch_half_pixel" and out <= 1:
        return torch.zeros_like(x)
    return (x + 0.5) / scale - 0.5


def _nearest(node: Node, t: torch.Tensor, axis: int, src: torch.Tensor) -> torch.Tensor:
    rounding = node.attr("nearest_mode", "round_prefer_floor")
    index = {
        "round_prefer_floor": lambda s: torch.ceil(s - 0.5),
        "round_prefer_ceil": lambda s: torch.floor(s + 0.5),
        "floor": torch.floor,
        "ceil": torch.ceil,
    }[rounding](src)
    index = index.clamp(0, t.shape[axis] - 1).long()
    return t.index_select(axis, index)


def _linear(t: torch.Tensor, axis: int, src: torch.Tensor) -> torch.Tensor:
    size = t.shape[axis]
    src = src.clamp(0, size - 1)
    low = src.floor().long()
    high = (low + 1).clamp(max=size - 1)
    weight = (src - low).to(t.dtype)
    view = [1] * t.dim()
    view[axis] = -1
    weight = weight.reshape(view)
    return t.index_select(axis, low) * (1 - weight) + t.index_select(axis, high) * weight


@op("Resize", check=_check_resize)
def _resize(node: Node, x: list[Any]) -> Any:
    t = x[0]
    sizes, scales = _sizes_and_scales(x)
    linear = node.attr("mode", "nearest") == "linear"
    for axis, (out, scale) in enumerate(zip(sizes, scales, strict=True)):
        if out == t.shape[axis] and scale == 1.0:
            continue
        src = _source(node, out, t.shape[axis], scale, t.device)
        t = _linear(t, axis, src) if linear else _nearest(node, t, axis, src)
    return t
