"""`optimize`: ONNX Runtime offline graph optimization (constant folding, fusions), and its
transformer optimizer's fusions where a graph matches them; the output is checked against the
input at two batch sizes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from onnxruntime.transformers.optimizer import optimize_model

from app.passes.optimize import (
    OptimizeConfig,
    OptimizeTechnique,
)
from worker import onnx_io
from worker.ort import session as ort_session
from worker.passes.base import Pass, PassContext, PassResult

LEVEL_WARNING = (
    "Models optimized at the `extended` level may contain ONNX Runtime contrib ops: they run in "
    "ONNX Runtime only, and fusions chosen for this machine's CPU."
)


FUSION_WARNING = (
    "Transformer fusions write ONNX Runtime contrib ops (e.g. Attention, SkipLayerNormalization, "
    "FastGelu): the model runs in ONNX Runtime only."
)


NO_FUSION_WARNING = (
    "The transformer optimizer fused nothing: the graph does not match its patterns (dynamo "
    "exports and SDPA attention often do not; docs/field-notes.md)."
)


def _transformer_fusions(source: Path, out: Path, config: OptimizeConfig) -> dict[str, Any]:
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config.num_heads,
        hidden_size=config.hidden_size,
        opt_level=0,  # only the fusions here; the session below applies the ORT level
        use_gpu=False,
    )
    optimized.save_model_to_file(str(out), use_external_data_format=onnx_io.is_large(source))
    stats = optimized.get_fused_operator_statistics() or {}
    return {k: int(v) for k, v in stats.items() if v}


class OptimizePass(Pass[OptimizeConfig]):
    technique = OptimizeTechnique()

    def run(self, ctx: PassContext, config: OptimizeConfig) -> PassResult:
        source, warnings = ctx.input_path, []
        metrics: dict[str, Any] = {"level": config.level}
        if config.transformer_fusions:
            fused_path = ctx.work_dir / "fused.onnx"
            metrics["fused_operators"] = _transformer_fusions(source, fused_path, config)
            warnings.append(FUSION_WARNING if metrics["fused_operators"] else NO_FUSION_WARNING)
            source = fused_path
        out = ctx.work_dir / "optimized.onnx"
        ort_session(source, ctx.threads, level=config.level, optimized_path=out)
        before = onnx_io.load_model(ctx.input_path, load_data=False)
        after = onnx_io.load_model(out, load_data=False)
        metrics |= {
            "nodes_before": len(before.graph.node),
            "nodes_after": len(after.graph.node),
            "op_types_after": dict(Counter(n.op_type for n in after.graph.node)),
            # Fusions reorder float arithmetic: compared with the input, not bit for bit.
            "validation": ctx.tools.validate(
                ctx.input_path, "onnx", out, "onnx", rtol=1e-3, atol=1e-3
            ),
        }
        if config.level == "extended":
            warnings.append(LEVEL_WARNING)
        return PassResult(out, "onnx", metrics, warnings)
