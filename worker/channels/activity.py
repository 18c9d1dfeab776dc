"""Measured activity of channels: mean absolute activation at the inputs of their consumers."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from worker.channels.state import Analysis
from worker.ort import session as ort_session

ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def activity(
    analysis: Analysis, feeds: dict[str, np.ndarray], threads: int, batch: int = 32
) -> dict[int, float]:
    """Per unit (root channel id): the largest, over the tensors its consumers read, of the
    mean absolute value of its entries over the samples of `feeds` and every other axis."""
    axes = {r.tensor: (r.axis, r.ids) for r in analysis.readers}
    if not axes:
        return {}
    names = sorted(axes)
    session = ort_session(_with_outputs(analysis.model, names).SerializeToString(), threads)
    dtypes = {i.name: ORT_DTYPES.get(i.type) for i in session.get_inputs()}
    samples = min(len(a) for a in feeds.values())
    sums = {n: np.zeros(len(axes[n][1])) for n in names}
    counts = dict.fromkeys(names, 0)
    for start in range(0, samples, batch):
        chunk = {
            k: np.asarray(v[start : start + batch], dtype=dtypes.get(k)) for k, v in feeds.items()
        }
        for name, value in zip(names, session.run(names, chunk), strict=True):
            moved = np.moveaxis(np.abs(np.asarray(value, dtype=np.float64)), axes[name][0], 0)
            flat = moved.reshape(moved.shape[0], -1)
            sums[name] += flat.sum(1)
            counts[name] += flat.shape[1]
    out: dict[int, float] = {}
    for name in names:
        means = sums[name] / max(counts[name], 1)
        for channel, mean in zip(axes[name][1], means, strict=True):
            root = analysis.channels.find(int(channel))
            out[root] = max(out.get(root, 0.0), float(mean))
    return out


def _with_outputs(model: Any, names: list[str]) -> Any:
    """A copy of `model` that also returns the tensors `names`."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        typed = onnx.shape_inference.infer_shapes(copy)
    except Exception:  # a model inference rejects: float outputs are assumed
        typed = copy
    types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            elem = types.get(name) or onnx.TensorProto.FLOAT
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return copy
