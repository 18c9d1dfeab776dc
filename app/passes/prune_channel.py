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

Defaults come from measurement (FIELD-NOTES.md): the kept channels are rounded up to a multiple
of `round_to=8` (odd channel counts gave no speed-up, multiples of 8 did), and accuracy
collapses right after channel pruning and needs recovery (`distill`). Every result is checked:
the ONNX checker and strict shape inference, a run in ONNX Runtime with output shapes
unchanged, and equality with the original model whose removed channels are zeroed at their
consumers (what the analysis claims the pruned graph computes). Pruned PyTorch uploads come out
as ONNX (they are exported before this step).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from app.core.errors import JobFailure
from app.passes.base import Pass, PassConfig, PassContext, PassResult

MAX_GROUPS_REPORTED = 500
RECOVERY_WARNING = (
    "Structured pruning needs recovery: accuracy usually collapses right after channel pruning "
    "(measured 11-57% on a small CNN, back to ~99% after a short fine-tune); follow it with "
    "`distill`."
)
DEAD_TOLERANCE = 1e-4  # relative: outputs of a dead-neuron removal are expected unchanged


class PruneChannelConfig(PassConfig):
    """Remove whole channels and neurons, so that tensors really shrink (structured pruning)."""

    op: Literal["prune"] = Field(description="Pruning.")
    method: Literal["channel"] = Field(
        description="`channel`: structured pruning; removes conv channels, linear and FFN "
        "neurons with everything coupled to them (batch-norm, residual partners, next layers)."
    )
    ratio: float = Field(
        gt=0.0,
        lt=1.0,
        description="Fraction of the channels of each group removed (0 < r < 1), rounded down, "
        "before `round_to`.",
    )
    importance: Literal["l1", "l2", "random"] = Field(
        "l1",
        description="Which channels go first: `l1` / `l2`: smallest norm of the producer weight "
        "slices, summed over the group's producers; `random`: seeded random order (a baseline).",
    )
    round_to: int = Field(
        8,
        ge=1,
        le=1024,
        description="The kept count of a group larger than this is rounded up to a multiple of "
        "it (measured: odd channel counts gave no speed-up, multiples of 8 did). 1 disables it.",
    )
    ignore_nodes: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Node names whose channels are never pruned (inputs and outputs): their "
        "weights stay untouched, and so do the groups coupled to them.",
    )
    scope: Literal["layer", "global"] = Field(
        "layer",
        description="`layer`: every group loses `ratio` of its channels. `global`: `ratio` of "
        "all channels, least important first, with scores normalized by their group's mean "
        "(groups lose different fractions; every group keeps at least one channel).",
    )
    seed: int = Field(0, ge=0, description="Seed of `importance: random`.")


class PruneNeuronConfig(PassConfig):
    """Remove channels and neurons that stay (near) zero on a calibration dataset."""

    op: Literal["prune"] = Field(description="Pruning.")
    method: Literal["neuron"] = Field(
        description="`neuron`: removes the channels/neurons whose activations at the inputs of "
        "the layers that read them are (near) zero on a calibration dataset."
    )
    calibration_dataset_id: str = Field(
        description="An uploaded .npz of representative model inputs (labels unused)."
    )
    threshold: float = Field(
        1e-6,
        ge=0.0,
        lt=1.0,
        description="A unit is dead when its mean absolute activation is at most `threshold` "
        "times the mean over its group (relative, so independent of the activations' scale). "
        "The default removes only units that are zero up to float rounding, which leaves the "
        "outputs unchanged on the calibration data; larger values also remove weak units.",
    )
    max_ratio: float = Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description="At most this fraction of a group is removed (the least active first); "
        "every group keeps at least one unit.",
    )
    calibration_samples: int = Field(
        512, ge=1, le=100_000, description="Samples of the dataset used (its first ones)."
    )
    round_to: int = Field(
        1,
        ge=1,
        le=1024,
        description="Round the kept count up to a multiple of this by keeping the most active "
        "dead units (8 helps speed; the default 1 removes every dead unit found).",
    )
    ignore_nodes: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Node names whose channels are never pruned (inputs and outputs).",
    )


class PruneChannelPass(Pass[PruneChannelConfig]):
    name = "prune.channel"
    version = "1.0"
    config_cls = PruneChannelConfig
    input_formats = ("onnx",)
    output_format = "onnx"
    summary = (
        "Structured pruning: removes whole conv channels, linear/FFN neurons and attention "
        "heads, so tensors really shrink."
    )

    def run(self, ctx: PassContext, config: PruneChannelConfig) -> PassResult:
        import onnx

        from worker.channels.select import by_ratio, importance
        from worker.channels.state import analyze

        model = onnx.load(str(ctx.input_path), load_external_data=False)
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
    name = "prune.neuron"
    version = "1.0"
    config_cls = PruneNeuronConfig
    input_formats = ("onnx",)
    output_format = "onnx"
    summary = "Removes the channels and neurons that are dead on a calibration dataset."

    def run(self, ctx: PassContext, config: PruneNeuronConfig) -> PassResult:
        import onnx

        from worker.channels.activity import activity
        from worker.channels.select import dead_units
        from worker.channels.state import analyze

        feeds, _ = ctx.tools.dataset_inputs(
            config.calibration_dataset_id, config.calibration_samples
        )
        model = onnx.load(str(ctx.input_path), load_external_data=False)
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
    from worker.channels.rewrite import parameter_count, rewrite

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
    import onnx

    onnx.save(model, str(path))


def _save_checked(model: Any, original: Any, path: Path) -> None:
    """Save with inferred shapes after the checker and strict shape inference, which may fail
    only where they fail on the original too."""
    import onnx

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


def _strictly_checked(model: Any) -> Any:
    import onnx

    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify(ctx: PassContext, pruned: Path, masked: Path) -> float:
    """Run the original, the pruned model and the masked reference on example inputs; the
    pruned model must keep the output shapes and compute what the reference computes."""
    try:
        feeds = ctx.tools.example_inputs(2)
        expected = _session(ctx.input_path, ctx.threads).run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise JobFailure(
            "pruning_failed",
            f"The input model does not run on synthesized inputs, so the pruned one cannot be "
            f"checked ({exc}); give its input shapes in `benchmark.input_shapes`.",
        ) from exc
    reference = _session(masked, ctx.threads).run(None, feeds)
    try:
        got = _session(pruned, ctx.threads).run(None, feeds)
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
    from worker.channels.activity import ORT_DTYPES

    original = _session(source, threads)
    typed = {
        i.name: np.asarray(feeds[i.name], dtype=ORT_DTYPES.get(i.type))
        for i in original.get_inputs()
    }
    want = [np.asarray(o, np.float64) for o in original.run(None, typed)]
    got = [np.asarray(o, np.float64) for o in _session(pruned, threads).run(None, typed)]
    error = max((float(np.abs(a - b).max(initial=0.0)) for a, b in zip(want, got, strict=True)))
    scale = max(float(np.abs(a).max(initial=0.0)) for a in want)
    return error, scale
