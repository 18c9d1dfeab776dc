"""`prune` with `method: magnitude`: unstructured L1 magnitude pruning of ONNX weight initializers.

A weight is the float initializer at input 1 of a Conv, Gemm or MatMul node (biases, at input 2,
are never touched). Exactly `round(sparsity * n)` weights are zeroed, the smallest magnitudes
first (ties broken by position), over all chosen weights at once (`global`) or tensor by tensor
(`layer`). An initializer is left alone when any node outside the chosen set reads it (an
excluded node, a tied embedding table, a graph input that can override it).

Measured (docs/field-notes.md "CNNs", tests/worker/passes/test_prune_magnitude.py): dense kernels do
not skip zeros, so latency does not change; only the compressed size shrinks (zlib, since zeros
compress).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from onnx import numpy_helper

from app.core.errors import JobFailure
from app.core.storage import compressed_size
from app.passes.prune_magnitude import (
    PruneMagnitudeConfig,
    PruneMagnitudeTechnique,
)
from worker import onnx_io
from worker.ort import session as ort_session
from worker.passes.base import Pass, PassContext, PassResult

FLOAT_TYPES = (1, 10, 11)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE


MAX_LAYERS_REPORTED = 500


DENSE_WARNING = (
    "Unstructured sparsity does not make this model faster: dense runtimes (ONNX Runtime's CPU "
    "and CUDA kernels) multiply the zeros too, so latency does not improve (the report's "
    "latency rows measure this model); only the compressed size shrinks. Use `method: channel` "
    "to make tensors smaller and inference faster."
)


HIGH_SPARSITY_WARNING = (
    "At {sparsity:.0%} sparsity without fine-tuning accuracy usually drops a lot; check this "
    "job's fidelity and accuracy in the report, and fine-tune with the masks kept to recover it."
)


EMPTIED_WARNING = (
    "Every weight of {layers} was zeroed: those layers now output their bias only. Global "
    "thresholds empty layers whose weights are small overall; use `scope: layer` or "
    "`exclude_nodes`."
)


def _weights(model: Any, config: PruneMagnitudeConfig) -> dict[str, list[Any]]:
    """Float initializers to prune, each with the chosen nodes that read it as their weight."""
    graph = model.graph
    floats = {i.name: i for i in graph.initializer if i.data_type in FLOAT_TYPES}
    chosen: dict[str, list[Any]] = {}
    for node in graph.node:
        name = node.input[1] if node.op_type in config.op_types and len(node.input) > 1 else ""
        if name in floats and node.name not in config.exclude_nodes:
            chosen.setdefault(name, []).append(node)
    for node in graph.node:  # a reader outside the chosen set keeps a weight dense
        for index, name in enumerate(node.input):
            if name in chosen and (index != 1 or all(n is not node for n in chosen[name])):
                chosen.pop(name)
    for value in graph.input:
        chosen.pop(value.name, None)
    return {
        name: nodes
        for name, nodes in chosen.items()
        if int(np.prod(floats[name].dims)) >= config.min_elements
    }


def _smallest(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """A mask of exactly `count` smallest entries (ties broken by position)."""
    mask = np.zeros(magnitudes.size, dtype=bool)
    if count <= 0:
        return mask
    threshold = np.partition(magnitudes, count - 1)[count - 1]
    mask[magnitudes < threshold] = True
    ties = np.flatnonzero(magnitudes == threshold)[: count - int(mask.sum())]
    mask[ties] = True
    return mask


def _prune(arrays: dict[str, np.ndarray], sparsity: float, scope: str) -> dict[str, np.ndarray]:
    """The arrays with their smallest-magnitude entries zeroed."""
    if scope == "layer":
        masks = {
            k: _smallest(np.abs(a.ravel()), round(sparsity * a.size)) for k, a in arrays.items()
        }
    else:
        flat = np.concatenate([np.abs(a.ravel()).astype(np.float32) for a in arrays.values()])
        mask = _smallest(flat, round(sparsity * flat.size))
        bounds = np.cumsum([0, *(a.size for a in arrays.values())])
        masks = {k: mask[bounds[i] : bounds[i + 1]] for i, k in enumerate(arrays)}
    return {
        k: np.where(masks[k].reshape(a.shape), np.zeros((), a.dtype), a) for k, a in arrays.items()
    }


def _counts(model: Any) -> tuple[int, int]:
    """(float parameters, non-zero float parameters) over every initializer."""
    total = nonzero = 0
    for init in model.graph.initializer:
        if init.data_type in FLOAT_TYPES:
            values = numpy_helper.to_array(init)
            total, nonzero = total + values.size, nonzero + int(np.count_nonzero(values))
    return total, nonzero


def _layers(weights: dict[str, list[Any]], pruned: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {
            "node": nodes[0].name,
            "op": nodes[0].op_type,
            "weight": name,
            "shape": list(pruned[name].shape),
            "params": int(pruned[name].size),
            "sparsity": round(
                1 - int(np.count_nonzero(pruned[name])) / max(pruned[name].size, 1), 6
            ),
            **({"shared_with": [n.name for n in nodes[1:]]} if len(nodes) > 1 else {}),
        }
        for name, nodes in weights.items()
    ]


def _outputs(path: Path, feeds: dict[str, Any], threads: int) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float64) for v in ort_session(path, threads).run(None, feeds)]


def _check_runs(source: Path, out: Path, feeds: dict[str, Any], threads: int) -> float:
    """The pruned file loads and runs in ONNX Runtime, finite where the input model is.

    Returns:
        The worst per-sample cosine similarity of its outputs with the input model's.
    """
    try:
        got = _outputs(out, feeds, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise JobFailure("pruning_failed", f"The pruned model does not run: {exc}") from exc
    worst = 1.0
    for ref, cand in zip(_outputs(source, feeds, threads), got, strict=True):
        if (np.isfinite(ref) & ~np.isfinite(cand)).any():
            raise JobFailure("pruning_not_finite", "The pruned model's outputs became NaN/inf.")
        rows = ref.shape[0] if ref.ndim > 1 else 1
        r, c = (np.nan_to_num(a).reshape(rows, -1) for a in (ref, cand))
        norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
        cosine = (r * c).sum(1)[norms > 0] / norms[norms > 0]
        worst = min(worst, float(cosine.min(initial=1.0)))
    return worst


def _notes(config: PruneMagnitudeConfig, layers: list[dict[str, Any]]) -> list[str]:
    notes = [DENSE_WARNING]
    if config.sparsity >= 0.8:
        notes.append(HIGH_SPARSITY_WARNING.format(sparsity=config.sparsity))
    emptied = [layer["node"] for layer in layers if layer["sparsity"] == 1.0]
    if emptied:
        notes.append(EMPTIED_WARNING.format(layers=", ".join(emptied[:20])))
    if not layers:
        notes.append("No weight was pruned: no Conv/Gemm/MatMul weight matched the config.")
    return notes


class PruneMagnitudePass(Pass[PruneMagnitudeConfig]):
    technique = PruneMagnitudeTechnique()

    def run(self, ctx: PassContext, config: PruneMagnitudeConfig) -> PassResult:
        model = onnx_io.load_model(ctx.input_path)
        weights = _weights(model, config)
        inits = {i.name: i for i in model.graph.initializer}
        arrays = {name: numpy_helper.to_array(inits[name]) for name in weights}
        pruned = _prune(arrays, config.sparsity, config.scope) if arrays else {}
        for name, values in pruned.items():
            inits[name].CopyFrom(numpy_helper.from_array(values, name))
        out = ctx.work_dir / "pruned.onnx"
        onnx_io.save_model(model, out)
        try:  # a refused model is not left behind in the work directory
            cosine = _check_runs(ctx.input_path, out, ctx.tools.example_inputs(2), ctx.threads)
        except JobFailure:
            out.unlink()
            raise
        layers = _layers(weights, pruned)
        chosen = sum(a.size for a in pruned.values())
        params, nonzero = _counts(model)
        metrics = {
            "sparsity_requested": config.sparsity,
            "scope": config.scope,
            "sparsity_reached": round(1 - _nonzero(pruned) / chosen, 6) if chosen else 0.0,
            "pruned_params": int(chosen),
            "parameters": params,
            "nonzero_parameters": nonzero,
            "layers_pruned": len(layers),
            "layers": layers[:MAX_LAYERS_REPORTED],
            "min_cosine_vs_input": cosine,
            "size_bytes_before": ctx.input_path.stat().st_size,
            "size_bytes_after": out.stat().st_size,
            "compressed_bytes_before": compressed_size(ctx.input_path),
            "compressed_bytes_after": compressed_size(out),
        }
        return PassResult(out, "onnx", metrics, _notes(config, layers))


def _nonzero(arrays: dict[str, np.ndarray]) -> int:
    return sum(int(np.count_nonzero(a)) for a in arrays.values())
