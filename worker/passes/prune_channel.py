"""`prune` with `method: channel` and `method: neuron`: structured pruning of ONNX graphs.

Both remove whole units found by the channel dependency analysis (`structure.py`): conv output
channels, linear and FFN neurons, and attention heads written with a heads axis (BERT/GPT-style
`view(b, n, heads, width)`), with every slice that reads them (batch-norm, biases, the next
layer's input channels, flatten blocks, residual partners, concatenation offsets, reshape
targets), and the heads of `torch.nn.MultiheadAttention` as the dynamo exporter writes it (packed
q/k/v, heads folded into the batch axis; `structure_mha.py`). Every group the analysis cannot
prove safe is left whole and reported (the TorchScript export of MultiheadAttention, which
computes the head width at run time, among them). `channel` removes the least important
`ratio` of each group (L1 norm of the producer weights by default, as torch-pruning does);
`neuron` removes the units that are dead on a calibration dataset.

Defaults come from measurement (docs/field-notes.md, "CNNs"): the kept channels are rounded up to a
multiple of `round_to=8` (odd channel counts gave no speed-up, multiples of 8 did), and accuracy
collapses right after channel pruning and needs recovery (`distill`). Every result is checked:
the ONNX checker and strict shape inference, a run in ONNX Runtime with output shapes
unchanged, and equality with the original model whose removed channels are zeroed at their
consumers (what the analysis claims the pruned graph computes). Pruned PyTorch uploads come out
as ONNX (they are exported before this step).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from app.core.errors import JobFailure
from app.passes.prune_channel import (
    PruneChannelConfig,
    PruneChannelTechnique,
    PruneNeuronConfig,
    PruneNeuronTechnique,
)
from worker import onnx_io
from worker.channels.activity import ORT_DTYPES, activity
from worker.channels.analysis import analyze
from worker.channels.rewrite import parameter_count, rewrite
from worker.channels.select import by_ratio, dead_units, importance
from worker.ort import session as ort_session
from worker.passes.base import Pass, PassContext, PassResult

MAX_GROUPS_REPORTED = 500


RECOVERY_WARNING = (
    "Structured pruning needs recovery: accuracy usually collapses right after channel pruning "
    "and comes back with a short fine-tune; follow it with `distill` (the report measures this "
    "job's fidelity and accuracy)."
)


DEAD_TOLERANCE = 1e-4  # relative: outputs of a dead-neuron removal are expected unchanged


class PruneChannelPass(Pass[PruneChannelConfig]):
    technique = PruneChannelTechnique()

    def run(self, ctx: PassContext, config: PruneChannelConfig) -> PassResult:
        model = onnx_io.load_model(ctx.input_path)
        analysis = analyze(model, config.ignore_nodes)
        scores = importance(analysis, config.importance, config.seed)
        removed = by_ratio(analysis, scores, config.ratio, config.round_to, config.scope)
        result = _finish(ctx, analysis, removed, config.ignore_nodes)
        result.metrics.update(
            importance=config.importance,
            ratio=config.ratio,
            round_to=config.round_to,
            scope=config.scope,
        )
        if removed:
            result.warnings.insert(0, RECOVERY_WARNING)
        return result


class PruneNeuronPass(Pass[PruneNeuronConfig]):
    technique = PruneNeuronTechnique()

    def run(self, ctx: PassContext, config: PruneNeuronConfig) -> PassResult:
        feeds, _ = ctx.tools.dataset_inputs(
            config.calibration_dataset_id, config.calibration_samples
        )
        model = onnx_io.load_model(ctx.input_path)
        analysis = analyze(model, config.ignore_nodes)
        measured = activity(analysis, feeds, ctx.threads)
        removed = dead_units(
            analysis, measured, config.threshold, config.max_ratio, config.round_to
        )
        result = _finish(ctx, analysis, removed, config.ignore_nodes)
        used = {k: v[:64] for k, v in feeds.items()}
        error, scale = _against_original(ctx.input_path, result.output_path, used, ctx.threads)
        result.metrics.update(
            threshold=config.threshold,
            calibration_samples=int(min(len(v) for v in feeds.values())),
            max_abs_error_vs_original=error,
            output_max_abs=scale,
        )
        result.warnings.append(
            "Units were judged dead on the calibration samples only; inputs unlike them may "
            "need them. Check the accuracy report."
        )
        if error > DEAD_TOLERANCE * max(scale, 1.0):
            result.warnings.insert(0, RECOVERY_WARNING)
        return result


def _finish(ctx: PassContext, analysis: Any, removed: set[int], ignore: list[str]) -> PassResult:
    """Write, check and describe the pruned model."""
    pruned = rewrite(analysis, removed, "prune")
    out = ctx.work_dir / "pruned.onnx"
    _save_checked(pruned, analysis.model, out)
    masked = ctx.work_dir / "masked_reference.onnx"
    _save(rewrite(analysis, removed, "mask"), masked)
    error = _verify(ctx, out, masked)
    masked.unlink()
    groups, skipped = _group_metrics(analysis, removed)
    metrics: dict[str, Any] = {
        "parameters_before": parameter_count(analysis.model),
        "parameters_after": parameter_count(pruned),
        "groups_found": len(analysis.groups),
        "groups_pruned": sum(g["channels_after"] < g["channels_before"] for g in groups),
        "groups_skipped": len(skipped),
        "channels_removed": len(removed),
        "max_abs_error_vs_masked_reference": error,
        "groups": groups[:MAX_GROUPS_REPORTED],
        "skipped_groups": skipped[:MAX_GROUPS_REPORTED],
    }
    return PassResult(out, "onnx", metrics, _warnings(analysis, removed, skipped, ignore))


def _group_metrics(
    analysis: Any, removed: set[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    groups, skipped = [], []
    for group in analysis.groups:
        count = len(group.units)
        if group.prunable:
            gone = sum(int(u) in removed for u in group.units)
            groups.append(
                {
                    "producers": group.producers,
                    "channels_before": count,
                    "channels_after": count - gone,
                    # output channels of each producer per unit: a head's width, 2 for GLU halves
                    "channels_per_unit": group.width,
                }
            )
        else:
            skipped.append(
                {"producers": group.producers, "channels": count, "reason": group.reason}
            )
    return groups, skipped


def _warnings(
    analysis: Any, removed: set[int], skipped: list[dict[str, Any]], ignore: list[str]
) -> list[str]:
    warnings = []
    unknown = sorted(set(ignore) - {n.name for n in analysis.model.graph.node})
    if unknown:
        warnings.append(f"ignore_nodes names no node of the model: {unknown[:20]}.")
    outputs = {o.name for o in analysis.model.graph.output}
    inner = [s for s in skipped if not s["reason"].startswith("reaches the graph output")]
    if inner:
        reasons = Counter(str(s["reason"]) for s in inner).most_common(3)
        top = "; ".join(f"{r} ({n}x)" for r, n in reasons)
        warnings.append(
            f"{len(inner)} channel group(s) were left whole: the analysis could not prove them "
            f"safe to prune (see `skipped_groups`). Most common: {top}."
        )
    if not removed:
        warnings.append(
            "No channel was removed: the model is unchanged"
            + (" (only the output layer's channels were found)." if outputs and not inner else ".")
        )
    return warnings


def _save(model: Any, path: Path) -> None:
    onnx_io.save_model(model, path)


def _save_checked(model: Any, original: Any, path: Path) -> None:
    """Save with inferred shapes after the checker and strict shape inference, which may fail
    only where they fail on the original too."""
    try:
        inferred = _strictly_checked(model)
    except Exception as exc:
        try:
            _strictly_checked(original)
        except Exception:  # the exporter's own graph does not pass: judge by running it
            inferred = onnx.shape_inference.infer_shapes(model)
        else:
            raise JobFailure("pruning_failed", f"The pruned graph is not valid: {exc}") from exc
    _save(inferred, path)


PROTOBUF_LIMIT = 2**31 - 2**26  # a ModelProto this large cannot be serialized in memory


def _strictly_checked(model: Any) -> Any:
    """The checked model with its shapes inferred. One over the protobuf limit is checked from
    a copy saved with external data (the in-memory checks serialize it and would fail), and
    returned as it is."""
    if onnx_io.tensor_bytes(model) <= PROTOBUF_LIMIT:
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    with tempfile.TemporaryDirectory(prefix="modelpress-check-") as tmp:
        copy = Path(tmp) / "model.onnx"
        onnx_io.save_model(model, copy, external=True)
        onnx.checker.check_model(str(copy))
        onnx.shape_inference.infer_shapes_path(
            str(copy), str(Path(tmp) / "inferred.onnx"), check_type=True, strict_mode=True
        )
    return model


def _verify(ctx: PassContext, pruned: Path, masked: Path) -> float:
    """Run the original, the pruned model and the masked reference on example inputs; the
    pruned model must keep the output shapes and compute what the reference computes."""
    try:
        feeds = ctx.tools.example_inputs(2)
        expected = ort_session(ctx.input_path, ctx.threads).run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise JobFailure(
            "pruning_failed",
            f"The input model does not run on synthesized inputs, so the pruned one cannot be "
            f"checked ({exc}); give its input shapes in `benchmark.input_shapes`.",
        ) from exc
    reference = ort_session(masked, ctx.threads).run(None, feeds)
    try:
        got = ort_session(pruned, ctx.threads).run(None, feeds)
    except Exception as exc:
        raise JobFailure("pruning_failed", f"The pruned model does not run: {exc}") from exc
    error = 0.0
    for want, ref, out in zip(expected, reference, got, strict=True):
        if np.shape(want) != np.shape(out):
            raise JobFailure(
                "pruning_failed",
                f"The pruned model's output shape {np.shape(out)} differs from {np.shape(want)}.",
            )
        ref64, out64 = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        scale = max(float(np.abs(ref64).max(initial=0.0)), 1.0)
        error = max(error, float(np.abs(ref64 - out64).max(initial=0.0)))
        if not np.allclose(out64, ref64, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
            raise JobFailure(
                "pruning_failed",
                "The pruned model does not compute what the dependency analysis predicted "
                f"(max abs error {error:.3g} against the original with the removed channels "
                "zeroed), so it is not shipped. Please report this model.",
            )
    return error


def _against_original(
    source: Path, pruned: Path, feeds: dict[str, Any], threads: int
) -> tuple[float, float]:
    """(max abs error of the pruned model vs the original, max abs output of the original)."""
    original = ort_session(source, threads)
    typed = {
        i.name: np.asarray(feeds[i.name], dtype=ORT_DTYPES.get(i.type))
        for i in original.get_inputs()
    }
    want = [np.asarray(o, np.float64) for o in original.run(None, typed)]
    got = [np.asarray(o, np.float64) for o in ort_session(pruned, threads).run(None, typed)]
    error = max((float(np.abs(a - b).max(initial=0.0)) for a, b in zip(want, got, strict=True)))
    scale = max(float(np.abs(a).max(initial=0.0)) for a in want)
    return error, scale
